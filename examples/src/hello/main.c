/* example/hello: prints the greeting of example/greeting-data through example/libhello.
 * A static x86_64 Linux program without libc (built by scripts/make-examples.sh), so an image
 * of the closure runs it with no shell and no dynamic loader. */
#include "hello.h"

/* The kernel enters here with the stack 16-byte aligned; a call keeps the ABI's alignment. */
__asm__(".text\n"
        ".global _start\n"
        "_start:\n"
        "  xor %ebp, %ebp\n"
        "  and $-16, %rsp\n"
        "  call hello_main\n"
        "  mov %eax, %edi\n"
        "  call hello_exit\n");

int hello_main(void);

int hello_main(void) {
  static const char what[] = "hello: cannot print " HELLO_GREETING_PATH "\n";
  if (hello_greeting(1) < 0) {
    hello_write_all(2, what, sizeof what - 1);
    return 1;
  }
  return 0;
}
