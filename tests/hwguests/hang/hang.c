/* hang: never exits (cli; hlt forever).  Used to test the QEMU runner's
 * timeout, not a conformance guest. */
#include "rt.h"

int main(void)
{
    kprintf("hang: start\n");
    for (;;)
        __asm__ volatile("cli; hlt");
}
