/* A tiny interactive shell on the serial console.
 *
 * The shell echoes what it reads itself (the kernel driver does not), so a
 * scripted session prints the same text however the input bytes arrive.
 * Lines end with CR or LF (CR LF counts once); backspace/DEL edits. */
#include "ulib.h"

#define LINE_MAX 128

static char line[LINE_MAX];
static char inbuf[64];
static int in_len, in_pos, last_cr;

static int getch(void)
{
    if (in_pos == in_len) {
        fflush_out();                 /* the echo so far, before blocking */
        int n = read(0, inbuf, sizeof(inbuf));
        if (n <= 0)
            return -1;
        in_len = n;
        in_pos = 0;
    }
    return (unsigned char)inbuf[in_pos++];
}

/* Echo goes through the stdout buffer: one write() per burst of input. */
static void echo(const char *s, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        printf("%c", s[i]);
}

/* Returns the length, or -1 at end of input (Ctrl-D on an empty line). */
static int read_line(void)
{
    int len = 0;
    for (;;) {
        int c = getch();
        if (c < 0)
            return -1;
        if (c == '\n' && last_cr) {   /* the LF of a CR LF pair */
            last_cr = 0;
            continue;
        }
        last_cr = c == '\r';
        if (c == '\r' || c == '\n') {
            echo("\n", 1);
            line[len] = 0;
            return len;
        }
        if (c == 4 && len == 0)
            return -1;
        if (c == 8 || c == 127) {
            if (len > 0) {
                len--;
                echo("\b \b", 3);
            }
            continue;
        }
        if (c < 32 || c > 126 || len + 1 >= LINE_MAX)
            continue;
        line[len++] = (char)c;
        char ch = (char)c;
        echo(&ch, 1);
    }
}

static char *next_word(char **p)
{
    char *s = *p;
    while (*s == ' ')
        s++;
    if (!*s) {
        *p = s;
        return 0;
    }
    char *w = s;
    while (*s && *s != ' ')
        s++;
    if (*s)
        *s++ = 0;
    *p = s;
    return w;
}

static void cmd_help(void)
{
    printf("commands:\n"
           "  ls                 list the programs\n"
           "  run NAME [ITERS]   run a program (or just: NAME [ITERS])\n"
           "  uptime             time since boot\n"
           "  stats              kernel counters\n"
           "  echo TEXT          print TEXT\n"
           "  help               this text\n"
           "  exit [STATUS]      leave the shell (and halt)\n"
           "lines tagged [timing] depend on the machine's speed\n");
}

static void cmd_ls(void)
{
    for (int i = 0; i < NPROGRAMS; i++) {
        if (i == PROG_init)
            continue;
        printf("  %-11s %-8s %s\n", programs[i].name, group_name(programs[i].group),
               programs[i].desc);
    }
}

static void cmd_uptime(void)
{
    uint32_t ms = time_ms();
    printf("[timing] uptime: %u.%03u s\n", ms / 1000, ms % 1000);
}

static void cmd_stats(void)
{
    struct rv_stats s;
    if (get_stats(&s) < 0) {
        printf("sh: stats failed\n");
        return;
    }
    printf("[timing] ticks %u at %u Hz, %u irqs\n", s.ticks, s.hz, s.irqs);
    printf("[timing] syscalls %u, context switches %u\n", s.syscalls, s.ctxsw);
    printf("[timing] page faults %u, forks %u, processes %u\n", s.pgfaults, s.forks, s.procs);
    printf("[timing] memory %u KiB free of %u KiB\n", s.free_kib, s.total_kib);
}

static void run_program(const char *name, const char *arg)
{
    int prog = program_find(name);
    if (prog < 0 || prog == PROG_init) {
        printf("sh: unknown command or program '%s' (try help)\n", name);
        return;
    }
    int pid = fork();
    if (pid < 0) {
        printf("sh: fork failed\n");
        return;
    }
    if (pid == 0) {
        exec(name, arg ? arg : "");
        printf("sh: cannot exec %s\n", name);
        exit(127);
    }
    int status = 0, w;
    while ((w = wait(&status)) != pid && w >= 0)
        ;
    if (status != 0)
        printf("sh: %s exited with status %d\n", name, status);
}

int prog_sh(const char *args)
{
    (void)args;
    printf("ringvisor shell: type help\n");
    for (;;) {
        printf("$ ");
        fflush_out();
        int n = read_line();
        if (n < 0) {
            printf("\n");
            return 0;
        }
        char *p = line;
        char *cmd = next_word(&p);
        if (!cmd)
            continue;
        if (!strcmp(cmd, "help")) {
            cmd_help();
        } else if (!strcmp(cmd, "ls") || !strcmp(cmd, "programs")) {
            cmd_ls();
        } else if (!strcmp(cmd, "uptime")) {
            cmd_uptime();
        } else if (!strcmp(cmd, "stats")) {
            cmd_stats();
        } else if (!strcmp(cmd, "echo")) {
            while (*p == ' ')
                p++;
            printf("%s\n", p);
        } else if (!strcmp(cmd, "exit")) {
            char *w = next_word(&p);
            return w ? (int)parse_u32(w, 0) : 0;
        } else if (!strcmp(cmd, "run")) {
            char *name = next_word(&p);
            if (!name)
                printf("sh: run NAME [ITERS]\n");
            else
                run_program(name, next_word(&p));
        } else {
            run_program(cmd, next_word(&p));
        }
    }
}
