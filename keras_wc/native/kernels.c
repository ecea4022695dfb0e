/* Fused elementwise kernels of the lean training step, for the backends
 * that run one kernel per op (PyTorch without torch.compile).
 *
 * Each function makes one pass over a kernel's float32 entries where the
 * same step written with the backend's ops makes several (PyTorch: one
 * memory pass per op, and its own `atan` and `pow` are slow on CPU). The
 * formulas are those of keras_wc's keras.ops path (the reference the tests
 * compare these kernels with), for Ψ(v) = a·f(v/b) with
 *
 *   f = arctan (KWC_ARCTAN):   Ψ'(v) = a·b/(b² + v²)       WC paper, Eq. 1, 3
 *   f(u) = sign(u)·|u|^α, α an integer in [1, 7] (KWC_POWERPROP):
 *                              Ψ'(v) = (a/b)·α·|v/b|^(α−1)  Schwarz et al.
 *   ∂L/∂v = (∂L/∂Ψ(v) + 2λ·g_p·Ψ(v))·Ψ'(v)   Eq. 2 with Eq. 5's penalty
 *   ∂L/∂a = Σ ∂L/∂Ψ(v)·Ψ(v)/a,  ∂L/∂b = −Σ (∂L/∂v)·v/b   §III-B
 *
 * arctan is `keras_wc.companders.polynomial_arctan`: range reduction to
 * [0, tan(π/8)] and an odd degree-9 minimax polynomial (max error 1.5e-7),
 * written without branches so that the compiler vectorizes it. Each
 * function is compiled for AVX-512, AVX2 and baseline x86-64, the loader
 * picking the one the CPU runs (`target_clones`).
 *
 * Plain C with a C ABI: keras_wc/native/__init__.py loads it with ctypes.
 * Large arrays are split over `threads` POSIX threads; sums are accumulated
 * in double per block of 4096 entries.
 */

#include <math.h>
#include <pthread.h>
#include <stdint.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) &&       \
    !defined(KWC_NO_CLONES)
#define KWC_CLONES                                                           \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KWC_CLONES
#endif

#define KWC_BLOCK 4096
#define KWC_MAX_THREADS 64
/* Below this many entries a second thread costs more than it saves. */
#define KWC_MIN_PARALLEL (1 << 17)

static const float C1 = 0.999999903034f;
static const float C3 = -0.333321842653f;
static const float C5 = 0.199615495396f;
static const float C7 = -0.137515772718f;
static const float C9 = 0.0772617775483f;
static const float TAN_PI_8 = 0.414213562373f;
static const float PI_4 = 0.785398163397f;
static const float PI_2 = 1.57079632679f;

static inline float kwc_arctan(float x) {
    float t = fabsf(x);
    float inverse = 1.0f / t;
    int large = t > 1.0f;
    t = large ? inverse : t;
    float reduced = (t - 1.0f) / (t + 1.0f);
    int middle = t > TAN_PI_8;
    float u = middle ? reduced : t;
    float u2 = u * u;
    float y = u * (C1 + u2 * (C3 + u2 * (C5 + u2 * (C7 + u2 * C9))));
    y = middle ? y + PI_4 : y;
    y = large ? PI_2 - y : y;
    return x < 0.0f ? -y : y;
}

typedef struct {
    int kind;  /* KWC_ARCTAN or KWC_POWERPROP */
    int alpha; /* KWC_POWERPROP's exponent, 1..7 */
    float a, b;
} kwc_compander;

enum { KWC_ARCTAN = 0, KWC_POWERPROP = 1 };

/* t^n for 0 <= n <= 7, by three squarings: no loop of varying length, so
 * that the loops calling it vectorize. */
static inline float kwc_power(float t, int n) {
    float r = 1.0f, p = t;
    for (int k = 0; k < 3; k++) {
        r = (n >> k) & 1 ? r * p : r;
        p = p * p;
    }
    return r;
}

/* f(u), Ψ(v) = a·f(v/b) and Ψ'(v) per kind: the range functions below are
 * instantiated once per kind, so that each loop has one formula and
 * vectorizes. */
static inline float f_arctan(const kwc_compander *c, float u) {
    (void)c;
    return kwc_arctan(u);
}
static inline float slope_arctan(const kwc_compander *c, float v) {
    return (c->a * c->b) / (c->b * c->b + v * v);
}
static inline float f_powerprop(const kwc_compander *c, float u) {
    return copysignf(kwc_power(fabsf(u), c->alpha), u);
}
static inline float slope_powerprop(const kwc_compander *c, float v) {
    float t = fabsf(v / c->b);
    return (c->a / c->b) * (float)c->alpha * kwc_power(t, c->alpha - 1);
}

/* -- one range of entries, per function -------------------------------- */

typedef struct {
    kwc_compander c;
    const float *in0, *in1;
    float *out0, *out1, *out2;
    float p[8];
    double sums[2];
    int64_t begin, end;
} kwc_task;

/* Ψ(v) = a·f(v/b) for the f named `f`. */
#define KWC_PSI(f, c, v) ((c)->a * f((c), (v) / (c)->b))

/* The five range functions of one kind of compander: f is F, Ψ' is SLOPE. */
#define KWC_RANGES(KIND, F, SLOPE)                                           \
KWC_CLONES                                                                   \
static void forward_range_##KIND(kwc_task *t) {                              \
    const kwc_compander c = t->c;                                            \
    const float *restrict v = t->in0;                                        \
    float *restrict w = t->out0;                                             \
    const int penalty = t->p[0] != 0.0f;                                     \
    double total = 0.0;                                                      \
    for (int64_t j = t->begin; j < t->end; j += KWC_BLOCK) {                 \
        int64_t e = j + KWC_BLOCK < t->end ? j + KWC_BLOCK : t->end;         \
        float block = 0.0f;                                                  \
        if (penalty) {                                                       \
_Pragma("omp simd reduction(+ : block)")                                     \
            for (int64_t i = j; i < e; i++) {                                \
                float y = KWC_PSI(F, &c, v[i]);                              \
                w[i] = y;                                                    \
                block += y * y;                                              \
            }                                                                \
        } else {                                                             \
_Pragma("omp simd")                                                          \
            for (int64_t i = j; i < e; i++) w[i] = KWC_PSI(F, &c, v[i]);     \
        }                                                                    \
        total += block;                                                      \
    }                                                                        \
    t->sums[0] = total;                                                      \
}                                                                            \
                                                                             \
KWC_CLONES                                                                   \
static void backward_range_##KIND(kwc_task *t) {                             \
    const kwc_compander c = t->c;                                            \
    const float *restrict g = t->in0, *restrict v = t->in1;                  \
    float *restrict out = t->out0;                                           \
    const float penalty = t->p[0];                                           \
    /* With penalty = 0 the Ψ costs no measurable time: memory-bound. */     \
_Pragma("omp simd")                                                          \
    for (int64_t i = t->begin; i < t->end; i++) {                            \
        float x = v[i];                                                      \
        out[i] = (g[i] + penalty * KWC_PSI(F, &c, x)) * SLOPE(&c, x);        \
    }                                                                        \
}                                                                            \
                                                                             \
KWC_CLONES                                                                   \
static void learnable_backward_range_##KIND(kwc_task *t) {                   \
    const kwc_compander c = t->c;                                            \
    const float *restrict g = t->in0, *restrict v = t->in1;                  \
    float *restrict out = t->out0;                                           \
    const int want_a = t->p[0] != 0.0f;                                      \
    double total_a = 0.0, total_b = 0.0;                                     \
    for (int64_t j = t->begin; j < t->end; j += KWC_BLOCK) {                 \
        int64_t e = j + KWC_BLOCK < t->end ? j + KWC_BLOCK : t->end;         \
        float block_a = 0.0f, block_b = 0.0f;                                \
        if (want_a) {                                                        \
_Pragma("omp simd reduction(+ : block_a, block_b)")                          \
            for (int64_t i = j; i < e; i++) {                                \
                float x = v[i], up = g[i];                                   \
                float gv = up * SLOPE(&c, x);                                \
                out[i] = gv;                                                 \
                block_a += up * F(&c, x / c.b);                              \
                block_b += gv * x;                                           \
            }                                                                \
        } else {                                                             \
_Pragma("omp simd reduction(+ : block_b)")                                   \
            for (int64_t i = j; i < e; i++) {                                \
                float x = v[i];                                              \
                float gv = g[i] * SLOPE(&c, x);                              \
                out[i] = gv;                                                 \
                block_b += gv * x;                                           \
            }                                                                \
        }                                                                    \
        total_a += block_a;                                                  \
        total_b += block_b;                                                  \
    }                                                                        \
    t->sums[0] = total_a;                                                    \
    t->sums[1] = total_b;                                                    \
}                                                                            \
                                                                             \
KWC_CLONES                                                                   \
static void effective_gradient_range_##KIND(kwc_task *t) {                   \
    const kwc_compander c = t->c;                                            \
    const float *restrict g = t->in0, *restrict v = t->in1;                  \
    float *restrict out = t->out0;                                           \
    /* 0 where Ψ'(v) = 0 (powerprop at 0): the step Ψ'(v)·u is 0 there. */   \
_Pragma("omp simd")                                                          \
    for (int64_t i = t->begin; i < t->end; i++) {                            \
        float slope = SLOPE(&c, v[i]);                                       \
        out[i] = slope > 0.0f ? g[i] / slope : 0.0f;                         \
    }                                                                        \
}                                                                            \
                                                                             \
KWC_CLONES                                                                   \
static void adam_range_##KIND(kwc_task *t) {                                 \
    const kwc_compander c = t->c;                                            \
    const float *restrict gw = t->in0;                                       \
    float *restrict v = t->out0, *restrict m = t->out1, *restrict s = t->out2; \
    const float beta_1 = t->p[0], beta_2 = t->p[1], step_size = t->p[2];     \
    const float epsilon = t->p[3], decay = t->p[4];                          \
    const float keep_1 = 1.0f - beta_1, keep_2 = 1.0f - beta_2;              \
    /* With decay = 0 the Ψ costs no measurable time: memory-bound. */       \
_Pragma("omp simd")                                                          \
    for (int64_t i = t->begin; i < t->end; i++) {                            \
        float x = v[i], g = gw[i];                                           \
        float m1 = m[i] + (g - m[i]) * keep_1;                               \
        float s1 = s[i] + (g * g - s[i]) * keep_2;                           \
        m[i] = m1;                                                           \
        s[i] = s1;                                                           \
        float step = (m1 * step_size) / (sqrtf(s1) + epsilon) +              \
                     decay * KWC_PSI(F, &c, x);                              \
        v[i] = x - SLOPE(&c, x) * step;                                      \
    }                                                                        \
}

KWC_RANGES(arctan, f_arctan, slope_arctan)
KWC_RANGES(powerprop, f_powerprop, slope_powerprop)

typedef void (*kwc_range_fn)(kwc_task *);

/* The range functions of each kind, indexed by the kind. */
#define KWC_BY_KIND(name) {name##_arctan, name##_powerprop}
static const kwc_range_fn FORWARD[] = KWC_BY_KIND(forward_range);
static const kwc_range_fn BACKWARD[] = KWC_BY_KIND(backward_range);
static const kwc_range_fn LEARNABLE_BACKWARD[] =
    KWC_BY_KIND(learnable_backward_range);
static const kwc_range_fn EFFECTIVE_GRADIENT[] =
    KWC_BY_KIND(effective_gradient_range);
static const kwc_range_fn ADAM[] = KWC_BY_KIND(adam_range);

/* -- splitting over threads -------------------------------------------- */
typedef struct {
    kwc_range_fn fn;
    kwc_task *task;
} kwc_thread_arg;

static void *run_thread(void *arg) {
    kwc_thread_arg *a = (kwc_thread_arg *)arg;
    a->fn(a->task);
    return NULL;
}

/* Runs `fn` over [0, n) in `threads` contiguous ranges (block-aligned) and
 * adds up their sums into `base->sums`. */
static void run(kwc_range_fn fn, kwc_task *base, int64_t n, int threads) {
    if (threads > KWC_MAX_THREADS) threads = KWC_MAX_THREADS;
    if (threads < 1 || n < KWC_MIN_PARALLEL) threads = 1;
    kwc_task tasks[KWC_MAX_THREADS];
    kwc_thread_arg args[KWC_MAX_THREADS];
    pthread_t ids[KWC_MAX_THREADS];
    int started[KWC_MAX_THREADS] = {0};
    int64_t blocks = (n + KWC_BLOCK - 1) / KWC_BLOCK;
    for (int k = 0; k < threads; k++) {
        tasks[k] = *base;
        tasks[k].begin = blocks * k / threads * KWC_BLOCK;
        tasks[k].end = blocks * (k + 1) / threads * KWC_BLOCK;
        if (tasks[k].end > n) tasks[k].end = n;
        tasks[k].sums[0] = tasks[k].sums[1] = 0.0;
        args[k].fn = fn;
        args[k].task = &tasks[k];
    }
    for (int k = 1; k < threads; k++)
        started[k] = pthread_create(&ids[k], NULL, run_thread, &args[k]) == 0;
    fn(&tasks[0]);
    for (int k = 1; k < threads; k++) {
        if (started[k])
            pthread_join(ids[k], NULL);
        else
            fn(&tasks[k]); /* no thread: run it here */
    }
    base->sums[0] = base->sums[1] = 0.0;
    for (int k = 0; k < threads; k++) {
        base->sums[0] += tasks[k].sums[0];
        base->sums[1] += tasks[k].sums[1];
    }
}

/* -- the C ABI ---------------------------------------------------------- */
/* Every function takes the compander as (kind, alpha, a, b). */

#define KWC_COMPANDER                                                        \
    { .kind = kind, .alpha = alpha, .a = a, .b = b }

/* w = Ψ(v); returns Σw² if `penalty`, else 0. */
double kwc_forward(int kind, int alpha, float a, float b, const float *v,
                   float *w, int64_t n, int penalty, int threads) {
    kwc_task t = {.c = KWC_COMPANDER,
                  .in0 = v,
                  .out0 = w,
                  .p = {penalty ? 1.0f : 0.0f}};
    run(FORWARD[kind], &t, n, threads);
    return t.sums[0];
}

/* out = (g + penalty·Ψ(v))·Ψ'(v); penalty = 2λ·g_p for Eq. 5's, or 0. */
void kwc_backward(int kind, int alpha, float a, float b, const float *g,
                  const float *v, float *out, int64_t n, float penalty,
                  int threads) {
    kwc_task t = {
        .c = KWC_COMPANDER, .in0 = g, .in1 = v, .out0 = out, .p = {penalty}};
    run(BACKWARD[kind], &t, n, threads);
}

/* out = g·Ψ'(v); sums[0] = Σ g·f(v/b) (if `want_a`, else 0),
 * sums[1] = Σ out·v. */
void kwc_learnable_backward(int kind, int alpha, float a, float b,
                            const float *g, const float *v, float *out,
                            int64_t n, int want_a, double *sums,
                            int threads) {
    kwc_task t = {.c = KWC_COMPANDER,
                  .in0 = g,
                  .in1 = v,
                  .out0 = out,
                  .p = {want_a ? 1.0f : 0.0f}};
    run(LEARNABLE_BACKWARD[kind], &t, n, threads);
    sums[0] = t.sums[0];
    sums[1] = t.sums[1];
}

/* out = g/Ψ'(v) (0 where Ψ'(v) = 0): ∂L/∂Ψ(v) from ∂L/∂v. */
void kwc_effective_gradient(int kind, int alpha, float a, float b,
                            const float *g, const float *v, float *out,
                            int64_t n, int threads) {
    kwc_task t = {.c = KWC_COMPANDER, .in0 = g, .in1 = v, .out0 = out};
    run(EFFECTIVE_GRADIENT[kind], &t, n, threads);
}

/* Keras's Adam step on g_w = ∂L/∂Ψ(v), multiplied by Ψ'(v) (the modified
 * optimizer, WC paper §III-A.3), in place on v and the moments m, s:
 *   m ← m + (g_w − m)(1 − β₁),  s ← s + (g_w² − s)(1 − β₂),
 *   v ← v − Ψ'(v)·(step_size·m/(√s + ε) + decay·Ψ(v)),
 * step_size = η·√(1 − β₂ᵗ)/(1 − β₁ᵗ); decay = η·λ (AdamW's decoupled decay of
 * Ψ(v)) or 0; Ψ and Ψ' of v before the step. */
void kwc_adam(int kind, int alpha, float a, float b, const float *gw,
              float *v, float *m, float *s, int64_t n, float beta_1,
              float beta_2, float step_size, float epsilon, float decay,
              int threads) {
    kwc_task t = {.c = KWC_COMPANDER,
                  .in0 = gw,
                  .out0 = v,
                  .out1 = m,
                  .out2 = s,
                  .p = {beta_1, beta_2, step_size, epsilon, decay}};
    run(ADAM[kind], &t, n, threads);
}

/* The version of this ABI, checked by the loader. */
int kwc_abi_version(void) { return 2; }
