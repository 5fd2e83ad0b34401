/* Linked into the prebuilt binaries only (native/prebuild.js).
 *
 * They carry libstdc++ statically, and its std::random_device object, pulled
 * in through its string and exception code though the addon never creates a
 * random_device, refers to arc4random: glibc 2.36 and later only. Defined here
 * (hidden, so not exported) on top of getrandom (glibc 2.25), the binaries
 * load on glibc 2.34 and later, the oldest that their pthread symbols allow.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/random.h>

__attribute__((visibility("hidden"))) uint32_t arc4random(void) {
  uint32_t value;
  unsigned char *p = (unsigned char *)&value;
  size_t left = sizeof value;
  while (left > 0) {
    ssize_t n = getrandom(p, left, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      abort();
    }
    p += n;
    left -= (size_t)n;
  }
  return value;
}
