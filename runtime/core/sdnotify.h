/* SPDX-License-Identifier: MIT */
/*
 * systemd's notification protocol, without libsystemd: datagrams such as
 * "READY=1", "STATUS=...", "WATCHDOG=1", "STOPPING=1" sent to the socket
 * named by $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace).
 * A no-op returning 0 when the variable is unset (not under systemd).
 */
#ifndef DUET_SDNOTIFY_H
#define DUET_SDNOTIFY_H

#include <stdint.h>

/* Send one message; 0, or -errno (the variable names no usable socket). */
int sdn_notify(const char *msg);

/* printf-style STATUS=...; same return. */
int sdn_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * The watchdog interval systemd expects pings within ($WATCHDOG_USEC, when
 * $WATCHDOG_PID is unset or ours), in microseconds; 0 when there is none.
 */
uint64_t sdn_watchdog_usec(void);

#endif /* DUET_SDNOTIFY_H */
