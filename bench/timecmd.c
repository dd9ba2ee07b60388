/* Times one run of a command from spawn to exit, for the cold-start figure:
 *   timecmd CMD [ARGS...]   ->   cold_ms=<wall> cold_cpu_ms=<user+sys> cold_rss_kb=<peak>
 * posix_spawn + wait4, so the timing holds neither a shell's startup nor its fork.
 * The command's stdout goes to /dev/null, so this program's line is the only output.
 * Exits with the command's status (1 if it did not exit normally). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  pid_t pid;
  int status;
  struct rusage ru;
  posix_spawn_file_actions_t fa;
  if (argc < 2) {
    fprintf(stderr, "usage: timecmd CMD [ARGS...]\n");
    return 2;
  }
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  double t0 = now_s();
  if (posix_spawnp(&pid, argv[1], &fa, NULL, argv + 1, environ) != 0) {
    perror("timecmd: spawn");
    return 1;
  }
  if (wait4(pid, &status, 0, &ru) != pid) {
    perror("timecmd: wait4");
    return 1;
  }
  double wall = now_s() - t0;
  double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
               (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
  if (!WIFEXITED(status)) return 1;
  if (WEXITSTATUS(status) != 0) return WEXITSTATUS(status);
  printf("cold_ms=%.2f cold_cpu_ms=%.2f cold_rss_kb=%ld\n", wall * 1e3, cpu * 1e3, ru.ru_maxrss);
  return 0;
}
