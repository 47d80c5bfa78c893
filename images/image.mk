# The appliance image (included at the end of the top-level Makefile).
#
#   make image        Debian 12 root filesystem with duetd, as images/out/rootfs.ext4
#                     (+ vmlinuz, initrd.img, cmdline.txt for direct boot) and the
#                     UEFI whole-disk image images/out/duet-disk.img
#   make image-test   boot both under qemu (TCG) and run the in-VM self-test
#   make image-clean  remove images/out
#   make image-deps   install the host tools the two above need
#
# Knobs (make VAR=...):
#   IMAGE_OUT         output folder (default images/out)
#   IMAGE_SUITE       Debian suite (default bookworm); mirrors come from the host's apt sources
#   IMAGE_CPUS        CPUs of the target, for the housekeeping set (default 2, as the boot test)
#   IMAGE_TEST_TIMEOUT  seconds each test boot may take (default 300)
# The runtime is built in $(BUILD) (override with BUILD=... as for every target).

IMAGE_DIR          := images
IMAGE_OUT          ?= $(IMAGE_DIR)/out
IMAGE_SUITE        ?= bookworm
IMAGE_CPUS         ?= 2
IMAGE_TEST_TIMEOUT ?= 300

DEPS_IMAGE := mmdebstrap:root-filesystem e2fsprogs:ext4-image-from-a-folder \
	      dosfstools:EFI-system-partition mtools:files-into-the-ESP \
	      fdisk:GPT-partition-table systemd-boot-efi:UEFI-boot-loader \
	      qemu-system-x86:boot-test ovmf:UEFI-firmware-for-the-boot-test \
	      zstd:size-report xz-utils:size-report uuid-runtime:partition-UUIDs

.PHONY: image image-test image-clean image-deps image-build

# A mirror that is briefly unreachable gets one more try.
image-deps:
	@etc/deps.sh $(DEPS_IMAGE) || { echo "image-deps: failed; retrying once in 20 s"; sleep 20; \
		etc/deps.sh $(DEPS_IMAGE); }

# The runtime first (its own deps target), then the image from what it built.
image: image-deps
	@$(MAKE) --no-print-directory BUILD=$(BUILD) deps
	@$(MAKE) --no-print-directory BUILD=$(BUILD) all
	@$(MAKE) --no-print-directory BUILD=$(BUILD) image-build

image-build:
	@BUILD=$(BUILD) IMAGE_OUT=$(IMAGE_OUT) IMAGE_SUITE=$(IMAGE_SUITE) IMAGE_CPUS=$(IMAGE_CPUS) \
		MAKE="$(MAKE)" $(IMAGE_DIR)/build.sh

image-test: image-deps image
	@IMAGE_OUT=$(IMAGE_OUT) IMAGE_TEST_TIMEOUT=$(IMAGE_TEST_TIMEOUT) $(IMAGE_DIR)/boot-test.sh

image-clean:
	@echo "  CLEAN   $(IMAGE_OUT)/"
	@rm -rf $(IMAGE_OUT)
