/* part=0: floating-point C as the compiler generates it for this image's settings
 * (-mfpmath=387 gives x87 code, with excess precision; -msse2 -mfpmath=sse gives scalar
 * SSE2, and -O3 packed SSE for the loops it vectorizes).  Every result is printed as
 * its bit pattern.
 */
#include "fpu.h"

#define N 64

static u32 bits_f(float f) { u32 u; memcpy(&u, &f, 4); return u; }
static u64 bits_d(double d) { u64 u; memcpy(&u, &d, 8); return u; }

static void show_f(const char *what, float f) { kprintf("%s: %08x\n", what, bits_f(f)); }

static void show_d(const char *what, double d)
{
    kprintf("%s: ", what);
    put64(bits_d(d));
    kprintf("\n");
}

static void show_ld(const char *what, long double v)
{
    f80 t;
    memcpy(&t, &v, 10);
    kprintf("%s: ", what);
    put80(&t);
    kprintf("\n");
}

static volatile double opaque_one = 1.0;     /* keeps the compiler from folding constants */

NOINL static double harmonic(int n)
{
    double s = 0;
    for (int k = 1; k <= n; k++)
        s += opaque_one / k;
    return s;
}

NOINL static float harmonic_f(int n)
{
    float s = 0;
    for (int k = 1; k <= n; k++)
        s += (float)opaque_one / (float)k;
    return s;
}

NOINL static double leibniz(int n)
{
    double s = 0, sign = opaque_one;
    for (int k = 0; k < n; k++) {
        s += sign / (2 * k + 1);
        sign = -sign;
    }
    return 4 * s;
}

NOINL static double gauss_legendre(void)
{
    double a = opaque_one, b = opaque_one / __builtin_sqrt(2.0 * opaque_one), t = 0.25, p = 1;
    for (int i = 0; i < 4; i++) {
        double an = (a + b) / 2;
        b = __builtin_sqrt(a * b);
        t -= p * (a - an) * (a - an);
        a = an;
        p *= 2;
    }
    return (a + b) * (a + b) / (4 * t);
}

NOINL static double kahan(int n)
{
    double s = 0, c = 0;
    for (int k = 1; k <= n; k++) {
        double y = opaque_one / ((double)k * k) - c;
        double t = s + y;
        c = (t - s) - y;
        s = t;
    }
    return s;
}

NOINL static double horner(double x)
{
    static const double c[] = { 1.0, -0.5, 1.0 / 3, -0.25, 0.2, -1.0 / 6, 1.0 / 7 };
    double r = 0;
    for (int i = 6; i >= 0; i--)
        r = r * x + c[i];
    return r;
}

NOINL static double cbrt_newton(double v)
{
    double x = v > 1 ? v / 3 : opaque_one;
    for (int i = 0; i < 12; i++)
        x = x - (x * x * x - v) / (3 * x * x);
    return x;
}

NOINL static int mandel(double cr, double ci)
{
    double zr = 0, zi = 0;
    int n = 0;
    while (n < 40 && zr * zr + zi * zi <= 4) {
        double t = zr * zr - zi * zi + cr;
        zi = 2 * zr * zi + ci;
        zr = t;
        n++;
    }
    return n;
}

NOINL static long double ld_series(void)
{
    long double s = 0, x = 1;
    for (int k = 1; k < 40; k++) {
        x = x / k;
        s += x;                    /* e - 1 */
    }
    return s;
}

static float va[N], vb[N], vc[N];
static double da[N], db[N];

NOINL static void vector_ops(void)
{
    for (int i = 0; i < N; i++) {
        va[i] = (float)(i * 3 + 1) / 7.0f;
        vb[i] = (float)(N - i) * 0.375f;
    }
    for (int i = 0; i < N; i++)
        vc[i] = va[i] * 2.5f + vb[i];                  /* saxpy: packed with -O3 */
    for (int i = 0; i < N; i++)
        vc[i] = vc[i] > va[i] * 3 ? vc[i] - va[i] : vc[i] / (va[i] + 1);
    u32 h = 0;
    for (int i = 0; i < N; i++)
        h = h * 31 + bits_f(vc[i]);
    kprintf("vector floats: %08x\n", h);
    for (int i = 0; i < N; i++) {
        da[i] = i * 0.1 - 3;
        db[i] = __builtin_sqrt((double)(i + 1));
    }
    for (int i = 0; i < N; i++)
        da[i] = da[i] * db[i] + da[i] / db[i];
    u64 g = 0;
    for (int i = 0; i < N; i++)
        g = g * 1000003 + bits_d(da[i]);
    kprintf("vector doubles: ");
    put64(g);
    kprintf("\n");
}

NOINL static void matmul(void)
{
    double m[6][6], p[6][6];
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 6; j++)
            m[i][j] = 1.0 / (i + j + opaque_one);     /* Hilbert matrix */
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 6; j++) {
            double s = 0;
            for (int k = 0; k < 6; k++)
                s += m[i][k] * m[k][j];
            p[i][j] = s;
        }
    u64 g = 0;
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 6; j++)
            g = g * 1000003 + bits_d(p[i][j]);
    kprintf("hilbert squared: ");
    put64(g);
    kprintf("\n");
}

NOINL static void conversions(void)
{
    static volatile double dv[] = { 2.5, -2.5, 1e10, -0.75, 123456.789, 4294967295.0 };
    static volatile int iv[] = { 0, -1, 16777217, 2147483647, -2147483647 - 1 };
    static volatile unsigned uv[] = { 0, 1, 0x80000000u, 0xffffffffu };
    for (int i = 0; i < 6; i++) {
        double d = dv[i];
        int trunc = d < 2147483647.0 && d > -2147483648.0 ? (int)d : 0;
        kprintf("conv %d: (int)=%d (float)=%08x\n", i, trunc, bits_f((float)d));
    }
    for (int i = 0; i < 5; i++)
        kprintf("conv int %d: float=%08x double=%08x%08x\n", iv[i], bits_f((float)iv[i]),
                (u32)(bits_d((double)iv[i]) >> 32), (u32)bits_d((double)iv[i]));
    for (int i = 0; i < 4; i++)
        kprintf("conv unsigned %u: double=%08x%08x\n", uv[i], (u32)(bits_d((double)uv[i]) >> 32),
                (u32)bits_d((double)uv[i]));
}

NOINL static void comparisons(void)
{
    static volatile double v[] = { 1.0, -0.0, 0.0, 2.0, 1.0 };
    u32 h = 0;
    double nan = __builtin_nan("");
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 5; j++)
            h = h * 3 + (v[i] < v[j]) + 2 * (v[i] == v[j]) + 4 * (v[i] >= v[j]);
    kprintf("comparisons: %08x nan<1=%d nan==nan=%d nan!=nan=%d\n", h, nan < v[0],
            nan == nan, nan != nan);
}

int part_c(void)
{
    kprintf("fpu c: start\n");
    show_d("harmonic 200", harmonic(200));
    show_f("harmonic float 200", harmonic_f(200));
    show_d("leibniz 100", leibniz(100));
    show_d("gauss-legendre pi", gauss_legendre());
    show_d("kahan zeta(2) 200", kahan(200));
    show_d("horner ln(1.5)", horner(0.5));
    show_d("cbrt 10", cbrt_newton(10));
    show_d("cbrt 0.001", cbrt_newton(0.001));
    u32 h = 0;
    for (int y = -4; y <= 4; y++)
        for (int x = -8; x <= 4; x++)
            h = h * 31 + (u32)mandel(x / 4.0, y / 4.0);
    kprintf("mandelbrot: %08x\n", h);
    show_ld("long double e-1", ld_series());
    vector_ops();
    matmul();
    conversions();
    comparisons();
    kprintf("fpu c: done\n");
    return 0;
}
