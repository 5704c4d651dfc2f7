/* example/libhello: the greeting of example/greeting-data, for programs without a libc.
 * Built into lib/libhello.a of example/libhello by scripts/make-examples.sh. x86_64 Linux. */
#ifndef HELLO_H
#define HELLO_H

/* The greeting example/libhello's dependency example/greeting-data ships. */
#define HELLO_GREETING_PATH "/hab/pkgs/example/greeting-data/1.0.0/20240101000000/share/greeting.txt"

/* Writes all of buf to fd: 0, or a negative errno. */
long hello_write_all(int fd, const char *buf, unsigned long len);

/* Copies the greeting to fd: 0, or a negative errno. */
long hello_greeting(int fd);

/* Ends the process. */
__attribute__((noreturn)) void hello_exit(int status);

#endif
