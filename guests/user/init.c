/* init (pid 1): runs the programs named by "run=" on the kernel command
 * line one after the other (fork, exec, wait), or starts the shell.
 *
 *   run=NAME[:ITERS][,NAME[:ITERS]...]   programs or groups, in order
 *   iters=N                              default iterations for all
 * Groups: all-nano, all-lmbench, all-cpu, all-fault, all (nano+lmbench+cpu).
 * Exit status: 0 if every program exited 0, 1 otherwise, 2 for a bad
 * command line. */
#include "ulib.h"

#define MAX_JOBS 64

struct job {
    int prog;
    uint32_t iters;   /* 0: program default */
};

static struct job jobs[MAX_JOBS];
static int njobs;

static int add_job(int prog, uint32_t iters)
{
    if (njobs == MAX_JOBS) {
        printf("init: too many programs in run=\n");
        return -1;
    }
    jobs[njobs].prog = prog;
    jobs[njobs].iters = iters;
    njobs++;
    return 0;
}

static int add_group(int group, uint32_t iters)
{
    for (int i = 0; i < NPROGRAMS; i++)
        if (programs[i].group == group && add_job(i, iters) < 0)
            return -1;
    return 0;
}

static int parse_run(const char *list, uint32_t iters)
{
    char item[32];
    const char *p = list;
    while (*p) {
        uint32_t n = 0;
        while (*p && *p != ',' && *p != ':' && n + 1 < sizeof(item))
            item[n++] = *p++;
        item[n] = 0;
        uint32_t it = iters;
        if (*p == ':') {
            const char *end;
            it = parse_u32(p + 1, &end);
            if (end == p + 1 || it == 0 || (*end && *end != ',')) {
                printf("init: bad iteration count in '%s'\n", list);
                return -1;
            }
            p = end;
        }
        if (*p && *p != ',') {
            printf("init: bad program name in '%s'\n", list);
            return -1;
        }
        if (*p == ',')
            p++;
        if (!item[0])
            continue;
        int r;
        if (!strcmp(item, "all-nano"))
            r = add_group(GRP_NANO, it);
        else if (!strcmp(item, "all-lmbench"))
            r = add_group(GRP_LMBENCH, it);
        else if (!strcmp(item, "all-cpu"))
            r = add_group(GRP_CPU, it);
        else if (!strcmp(item, "all-fault"))
            r = add_group(GRP_FAULT, it);
        else if (!strcmp(item, "all")) {
            r = add_group(GRP_NANO, it);
            if (!r) r = add_group(GRP_LMBENCH, it);
            if (!r) r = add_group(GRP_CPU, it);
        } else {
            int prog = program_find(item);
            if (prog < 0 || prog == PROG_init) {
                printf("init: unknown program '%s'\n", item);
                return -1;
            }
            r = add_job(prog, it);
        }
        if (r < 0)
            return -1;
    }
    return 0;
}

int prog_init(const char *cmdline)
{
    char list[200], val[16];
    uint32_t iters = 0;
    uint64_t now = rdtsc();
    struct rv_stats st;

    if (get_stats(&st) == 0) {
        uint64_t boot = ((uint64_t)st.boot_tsc_hi << 32) | st.boot_tsc_lo;
        printf("[timing] init: started %llu cycles after kernel entry\n", now - boot);
    }

    if (cmdline_get(cmdline, "iters", val, sizeof(val))) {
        const char *end;
        iters = parse_u32(val, &end);
        if (*end || iters == 0) {
            printf("init: bad iters=%s\n", val);
            return 2;
        }
    }
    if (!cmdline_get(cmdline, "run", list, sizeof(list))) {
        exec("sh", "");
        printf("init: cannot start the shell\n");
        return 2;
    }
    if (parse_run(list, iters) < 0)
        return 2;
    if (njobs == 0) {
        printf("init: run= names no program\n");
        return 2;
    }

    int failed = 0;
    for (int j = 0; j < njobs; j++) {
        const char *name = programs[jobs[j].prog].name;
        char args[16];
        snprintf(args, sizeof(args), "%u", jobs[j].iters);
        int pid = fork();
        if (pid < 0) {
            printf("init: fork failed\n");
            return 1;
        }
        if (pid == 0) {
            exec(name, args);
            printf("init: cannot exec %s\n", name);
            exit(127);
        }
        int status = 0, w;
        while ((w = wait(&status)) != pid && w >= 0)
            ;   /* reap orphans handed to init */
        if (status != 0) {
            printf("init: %s exited with status %d\n", name, status);
            failed++;
        }
    }
    printf("init: %d program%s run, %d failed\n", njobs, njobs == 1 ? "" : "s", failed);
    return failed ? 1 : 0;
}
