# The appliance image (included at the end of the top-level Makefile).
.PHONY: image image-test image-clean image-deps
