/* The program table and the dispatcher behind _start. */
#include "ulib.h"

#define PROG_DECL(id, name, grp, iters, desc) int prog_##id(const char *args);
PROGRAM_LIST(PROG_DECL)
#undef PROG_DECL

#define PROG_FN(id, name, grp, iters, desc) prog_##id,
static int (*const entry[NPROGRAMS])(const char *) = { PROGRAM_LIST(PROG_FN) };
#undef PROG_FN

#define PROG_ROW(id, name, grp, iters, desc) { name, grp, iters, desc },
const struct program programs[NPROGRAMS] = { PROGRAM_LIST(PROG_ROW) };
#undef PROG_ROW

int program_find(const char *name)
{
    for (int i = 0; i < NPROGRAMS; i++)
        if (!strcmp(programs[i].name, name))
            return i;
    return -1;
}

const char *group_name(int group)
{
    static const char *const names[] = { "system", "nano", "lmbench", "cpu", "fault", "test" };
    return group >= 0 && group < 6 ? names[group] : "?";
}

int umain(int prog, const char *args)
{
    if (prog < 0 || prog >= NPROGRAMS)
        return 127;
    int status = entry[prog](args);
    fflush_out();
    return status;
}
