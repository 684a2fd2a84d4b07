/*
 * banger-reseed: the two kernel calls a warm clone needs first, in one tiny process.
 *
 *   banger-reseed SECONDS.NANOSECONDS|- HEX
 *
 * 1. clock_settime(CLOCK_REALTIME) to the host's time (unless "-"): the clock stood still while
 *    the template's state was saved;
 * 2. RNDADDENTROPY with the host's random bytes (HEX, 32 to 512 bytes), credited 8 bits a byte,
 *    then RNDRESEEDCRNG: the CRNG is rekeyed at once, so no two clones of one template hand out
 *    the same random numbers.
 *
 * banger-reidentify runs it (falling back to date(1) and perl where an image lacks it). It is
 * built freestanding (no libc: raw x86-64 system calls, gcc -nostdlib -static) because right
 * after a restore under TCG every new instruction path costs translation time: this is a few
 * hundred bytes of code, where date and perl are megabytes. Exit codes: 0 ok, 2 bad arguments,
 * 3 the clock, 4 /dev/urandom, 5 RNDADDENTROPY, 6 RNDRESEEDCRNG.
 */
#define SYS_write 1
#define SYS_open 2
#define SYS_ioctl 16
#define SYS_exit 60
#define SYS_clock_settime 227
#define RNDADDENTROPY 0x40085203L
#define RNDRESEEDCRNG 0x5207L
#define MAX_BYTES 512

static long sys3(long n, long a, long b, long c) {
  long r;
  __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
  return r;
}

static unsigned long len(const char *s) {
  unsigned long n = 0;
  while (s[n]) n++;
  return n;
}

static void die(int code, const char *msg) {
  sys3(SYS_write, 2, (long)"banger-reseed: ", 15);
  sys3(SYS_write, 2, (long)msg, (long)len(msg));
  sys3(SYS_write, 2, (long)"\n", 1);
  sys3(SYS_exit, code, 0, 0);
  for (;;) {
  }
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

static struct {
  int entropy_count;
  int buf_size;
  unsigned char buf[MAX_BYTES];
} pool;

int cmain(long *sp) {
  long argc = sp[0];
  char **argv = (char **)(sp + 1);
  if (argc != 3) die(2, "usage: banger-reseed SECONDS.NANOSECONDS|- HEX");

  const char *clock = argv[1];
  if (!(clock[0] == '-' && clock[1] == 0)) {
    long sec = 0, nsec = 0;
    int i = 0, digits = 0;
    if (clock[0] < '1' || clock[0] > '9') die(2, "bad clock");
    for (; clock[i] >= '0' && clock[i] <= '9'; i++) {
      if (i >= 12) die(2, "bad clock");
      sec = sec * 10 + (clock[i] - '0');
    }
    if (clock[i++] != '.') die(2, "bad clock");
    for (; clock[i] >= '0' && clock[i] <= '9'; i++, digits++) nsec = nsec * 10 + (clock[i] - '0');
    if (clock[i] != 0 || digits != 9) die(2, "bad clock");
    long ts[2] = {sec, nsec};
    if (sys3(SYS_clock_settime, 0, (long)ts, 0) < 0) die(3, "clock_settime failed");
  }

  const char *hex = argv[2];
  unsigned long n = len(hex);
  if (n % 2 != 0 || n < 64 || n > 2 * MAX_BYTES) die(2, "entropy must be 32 to 512 bytes of hex");
  for (unsigned long i = 0; i < n / 2; i++) {
    int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) die(2, "entropy is not lowercase hex");
    pool.buf[i] = (unsigned char)(hi * 16 + lo);
  }
  pool.buf_size = (int)(n / 2);
  pool.entropy_count = (int)(n / 2 * 8);
  long fd = sys3(SYS_open, (long)"/dev/urandom", 0, 0);
  if (fd < 0) die(4, "cannot open /dev/urandom");
  if (sys3(SYS_ioctl, fd, RNDADDENTROPY, (long)&pool) < 0) die(5, "RNDADDENTROPY failed");
  if (sys3(SYS_ioctl, fd, RNDRESEEDCRNG, 0) < 0) die(6, "RNDRESEEDCRNG failed");
  return 0;
}

__asm__(".text\n"
        ".global _start\n"
        "_start:\n"
        "  xor %rbp, %rbp\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call cmain\n"
        "  mov %rax, %rdi\n"
        "  mov $60, %rax\n"
        "  syscall\n");
