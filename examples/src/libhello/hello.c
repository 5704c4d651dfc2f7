/* example/libhello: reads example/greeting-data's greeting with raw Linux syscalls (x86_64),
 * so that a static program using it needs no libc and no shell. */
#include "hello.h"

#define SYS_read 0
#define SYS_write 1
#define SYS_open 2
#define SYS_close 3
#define SYS_exit_group 231
#define O_RDONLY 0
#define O_CLOEXEC 02000000
#define EINTR 4

static long syscall3(long n, long a, long b, long c) {
  long ret;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(n), "D"(a), "S"(b), "d"(c)
                   : "rcx", "r11", "memory");
  return ret;
}

long hello_write_all(int fd, const char *buf, unsigned long len) {
  while (len > 0) {
    long n = syscall3(SYS_write, fd, (long)buf, (long)len);
    if (n == -EINTR)
      continue;
    if (n < 0)
      return n;
    buf += n;
    len -= (unsigned long)n;
  }
  return 0;
}

long hello_greeting(int fd) {
  char buf[512];
  long in = syscall3(SYS_open, (long)HELLO_GREETING_PATH, O_RDONLY | O_CLOEXEC, 0);
  if (in < 0)
    return in;
  for (;;) {
    long n = syscall3(SYS_read, in, (long)buf, sizeof buf);
    if (n == -EINTR)
      continue;
    if (n <= 0) {
      syscall3(SYS_close, in, 0, 0);
      return n;
    }
    long w = hello_write_all(fd, buf, (unsigned long)n);
    if (w < 0) {
      syscall3(SYS_close, in, 0, 0);
      return w;
    }
  }
}

void hello_exit(int status) {
  for (;;)
    syscall3(SYS_exit_group, status, 0, 0);
}
