/* Streaming polyphase FIR for integer-ratio resampling of int16 audio (gateway.audio's hot path).
 *
 * Why native: a 20 ms frame is ~20k multiply-adds, which numpy spreads over ~10 calls whose fixed
 * overhead (~0.25 us each) is most of the cost; here the whole frame is one call. No library does
 * this job: soxr's and libsamplerate's streaming engines either hold audio back or cost more per
 * frame (gateway/audio.py, "Why not soxr for everything"). The filter is designed in Python
 * (gateway.audio._filter_bank); this file only runs it.
 *
 * Semantics (identical to the numpy implementation it replaced, pinned by tests/gateway/test_audio.py
 * against a whole-signal float64 convolution): float32 history of the last (branch - 1) input
 * samples; up by L: each input sample yields L outputs, phase p from branch p of the bank; down by
 * M: every M-th input sample (counted across chunks) yields one output from the whole filter.
 * Output is rounded half to even and clipped to int16.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Outputs computed together: one accumulator vector per 4 or 8 of them, kept in registers. */
#define BLOCK 32

struct kernels {
    const char *name;
    /* Up by L: input sample i (window buffer[i .. i + branch)) yields outputs i * L + p, p < L. */
    void (*run_up)(const float *buffer, const float *bank, Py_ssize_t branch, int up, Py_ssize_t n,
                   int16_t *out);
    /* Down by M: kept sample j's window starts at buffer[first + j * M]. With the taps split as
     * r = s*M + q and the buffer into lanes lane_q[t] = buffer[first + q + t*M], output j is the
     * sum over q of a plain correlation of lane_q with taps q, q + M, ... at j: every load is
     * contiguous. `lanes` holds M lanes of `width` samples, `taps` M rows of `sub` taps. */
    void (*run_down)(const float *lanes, Py_ssize_t width, const float *taps, Py_ssize_t sub,
                     int down, Py_ssize_t kept, int16_t *out);
};

/* Sums of a block to int16, `stride` apart: clipped, then rounded half to even (the current
 * rounding mode; -fno-math-errno makes lrintf one instruction). */
static inline __attribute__((always_inline)) void
store_block(const float *sums, Py_ssize_t count, int16_t *out, Py_ssize_t stride)
{
    for (Py_ssize_t k = 0; k < count; k++) {
        float v = sums[k];
        v = v < -32768.0f ? -32768.0f : (v > 32767.0f ? 32767.0f : v);
        out[k * stride] = (int16_t)lrintf(v);
    }
}

/* The kernels for one vector type V (GCC/Clang vector extensions; its typedef has aligned(4) so
 * windows may start at any sample, and may_alias since it reads float arrays). SETS accumulator
 * sets take alternate taps: SETS * BLOCK / lanes independent multiply-add chains, enough to hide
 * the add latency without spilling (8 on AVX2's 16 registers, 8 on SSE2's 16). */
#define DEFINE_KERNELS(NAME, V, SETS, TARGET)                                                      \
    TARGET static inline __attribute__((always_inline)) void                                       \
    correlate_##NAME(const float *x, const float *taps, Py_ssize_t len, float *out)                \
    {                                                                                              \
        enum { LANES = sizeof(V) / sizeof(float), VECTORS = BLOCK / LANES };                       \
        V acc[SETS][VECTORS];                                                                      \
        for (int s = 0; s < SETS; s++)                                                             \
            for (int v = 0; v < VECTORS; v++)                                                      \
                acc[s][v] = (V){0};                                                                \
        Py_ssize_t r = 0;                                                                          \
        for (; r + SETS <= len; r += SETS)                                                         \
            for (int s = 0; s < SETS; s++) {                                                       \
                const V c = (V){0} + taps[r + s];                                                  \
                for (int v = 0; v < VECTORS; v++)                                                  \
                    acc[s][v] += c * *(const V *)(x + r + s + v * LANES);                          \
            }                                                                                      \
        for (; r < len; r++) {                                                                     \
            const V c = (V){0} + taps[r];                                                          \
            for (int v = 0; v < VECTORS; v++)                                                      \
                acc[0][v] += c * *(const V *)(x + r + v * LANES);                                  \
        }                                                                                          \
        for (int v = 0; v < VECTORS; v++) {                                                        \
            for (int s = 1; s < SETS; s++)                                                         \
                acc[0][v] += acc[s][v];                                                            \
            *(V *)(out + v * LANES) += acc[0][v];                                                  \
        }                                                                                          \
    }                                                                                              \
    TARGET static void run_up_##NAME(const float *buffer, const float *bank, Py_ssize_t branch,    \
                                     int up, Py_ssize_t n, int16_t *out)                           \
    {                                                                                              \
        float sums[BLOCK];                                                                         \
        for (Py_ssize_t i = 0; i < n; i += BLOCK) {                                                \
            for (int p = 0; p < up; p++) {                                                         \
                memset(sums, 0, sizeof sums);                                                      \
                correlate_##NAME(buffer + i, bank + p * branch, branch, sums);                     \
                store_block(sums, n - i < BLOCK ? n - i : BLOCK, out + i * up + p, up);            \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    TARGET static void run_down_##NAME(const float *lanes, Py_ssize_t width, const float *taps,    \
                                       Py_ssize_t sub, int down, Py_ssize_t kept, int16_t *out)    \
    {                                                                                              \
        float sums[BLOCK];                                                                         \
        for (Py_ssize_t j = 0; j < kept; j += BLOCK) {                                             \
            memset(sums, 0, sizeof sums);                                                          \
            for (int q = 0; q < down; q++)                                                         \
                correlate_##NAME(lanes + q * width + j, taps + q * sub, sub, sums);                \
            store_block(sums, kept - j < BLOCK ? kept - j : BLOCK, out + j, 1);                    \
        }                                                                                          \
    }                                                                                              \
    static const struct kernels kernels_##NAME = {#NAME, run_up_##NAME, run_down_##NAME};

/* Portable: 4-float vectors are SSE2 on any x86-64 and NEON on arm64. */
typedef float v4sf __attribute__((vector_size(16), aligned(4), may_alias));
DEFINE_KERNELS(portable, v4sf, 1, )

/* x86-64 with AVX2 and FMA (every server CPU since 2013-2015): 8-float vectors, fused multiply-add.
 * Chosen once at import by the CPU's feature flags (not by CPU model, which virtual machines hide). */
#if defined(__GNUC__) && defined(__x86_64__)
#define HAVE_AVX2_KERNELS 1
typedef float v8sf __attribute__((vector_size(32), aligned(4), may_alias));
DEFINE_KERNELS(avx2, v8sf, 2, __attribute__((target("avx2,fma"))))
#endif

/* What this CPU can run, fastest first (filled at import); the first is the default. */
static const struct kernels *available[2];
static int n_available;

static const struct kernels *
find_kernels(const char *name)
{
    for (int i = 0; i < n_available; i++) {
        if (strcmp(available[i]->name, name) == 0) {
            return available[i];
        }
    }
    return NULL;
}

typedef struct {
    PyObject_HEAD
    float *bank;       /* up > 1: (up, branch), row p = taps p, p + up, ... times up, reversed;
                          down > 1: (down, sub), row q = reversed taps q, q + down, ... */
    Py_ssize_t branch; /* taps per row of the bank as given: the history is branch - 1 samples */
    Py_ssize_t sub;    /* down > 1: taps per lane, ceil(branch / down) */
    int up, down;
    int phase;         /* input samples consumed modulo down: which ones are kept */
    float *buffer;     /* history (branch - 1 samples), then the current chunk, then slack */
    Py_ssize_t capacity;
    float *lanes;      /* down > 1: the buffer split into `down` interleaved lanes, see run_down */
    Py_ssize_t lanes_capacity;
    const struct kernels *kernels;
} PolyphaseFIR;

/* Room for the history, n new samples and the slack the last partial block reads past them. */
static int
ensure_capacity(PolyphaseFIR *self, Py_ssize_t n)
{
    Py_ssize_t need = 2 * self->branch + n + (Py_ssize_t)(BLOCK + 4) * self->down + BLOCK;
    if (need <= self->capacity) {
        return 0;
    }
    float *grown = PyMem_Realloc(self->buffer, (size_t)need * sizeof(float));
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(grown + self->capacity, 0, (size_t)(need - self->capacity) * sizeof(float));
    self->buffer = grown;
    self->capacity = need;
    return 0;
}

static int
PolyphaseFIR_init(PolyphaseFIR *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"bank", "up", "down", "kernel", NULL};
    Py_buffer bank;
    int up, down;
    const char *kernel = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*ii|$z", kwlist, &bank, &up, &down, &kernel)) {
        return -1;
    }
    const struct kernels *chosen = kernel == NULL ? available[0] : find_kernels(kernel);
    if (chosen == NULL) {
        PyBuffer_Release(&bank);
        PyErr_Format(PyExc_ValueError, "no kernel %s on this machine (see KERNELS)", kernel);
        return -1;
    }
    int ok = up >= 1 && down >= 1 && (up == 1 || down == 1) && bank.len > 0
             && bank.len % (Py_ssize_t)(sizeof(float) * (size_t)up) == 0;
    if (!ok) {
        PyBuffer_Release(&bank);
        PyErr_SetString(PyExc_ValueError,
                        "bank must be float32 (up, branch) with up >= 1, down >= 1, one of them 1");
        return -1;
    }
    PyMem_Free(self->bank);
    PyMem_Free(self->buffer);
    PyMem_Free(self->lanes);
    self->bank = self->buffer = self->lanes = NULL;
    self->capacity = self->lanes_capacity = 0;
    self->branch = bank.len / (Py_ssize_t)sizeof(float) / up;
    self->sub = (self->branch + down - 1) / down;
    self->up = up;
    self->down = down;
    self->phase = 0;
    self->kernels = chosen;
    Py_ssize_t size = down > 1 ? down * self->sub : up * self->branch;
    self->bank = PyMem_Calloc((size_t)size, sizeof(float));
    if (self->bank == NULL) {
        PyBuffer_Release(&bank);
        PyErr_NoMemory();
        return -1;
    }
    const float *given = (const float *)bank.buf;
    if (down > 1) { /* reversed tap r = s * down + q goes to row q, column s */
        for (Py_ssize_t r = 0; r < self->branch; r++) {
            self->bank[(r % down) * self->sub + r / down] = given[r];
        }
    } else {
        memcpy(self->bank, given, (size_t)bank.len);
    }
    PyBuffer_Release(&bank);
    return ensure_capacity(self, 960);
}

static void
PolyphaseFIR_dealloc(PolyphaseFIR *self)
{
    PyMem_Free(self->bank);
    PyMem_Free(self->buffer);
    PyMem_Free(self->lanes);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Splits the buffer from `first` into `down` lanes of `width` samples (run_down's input). */
static int
fill_lanes(PolyphaseFIR *self, Py_ssize_t first, Py_ssize_t width)
{
    int down = self->down;
    if (width * down > self->lanes_capacity) {
        float *grown = PyMem_Realloc(self->lanes, (size_t)(width * down) * sizeof(float));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->lanes = grown;
        self->lanes_capacity = width * down;
    }
    const float *start = self->buffer + first;
    for (int q = 0; q < down; q++) {
        float *lane = self->lanes + q * width;
        for (Py_ssize_t t = 0; t < width; t++) {
            lane[t] = start[q + t * down];
        }
    }
    return 0;
}

static PyObject *
PolyphaseFIR_process(PolyphaseFIR *self, PyObject *arg)
{
    if (self->bank == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "PolyphaseFIR was not initialised");
        return NULL;
    }
    Py_buffer pcm;
    if (PyObject_GetBuffer(arg, &pcm, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (pcm.len % 2) {
        PyBuffer_Release(&pcm);
        PyErr_Format(PyExc_ValueError, "pcm16 needs an even number of bytes, got %zd", pcm.len);
        return NULL;
    }
    Py_ssize_t n = pcm.len / 2;
    if (ensure_capacity(self, n) < 0) {
        PyBuffer_Release(&pcm);
        return NULL;
    }
    Py_ssize_t history = self->branch - 1;
    const int16_t *samples = (const int16_t *)pcm.buf; /* little-endian host: gateway.audio checks */
    float *chunk = self->buffer + history;
    for (Py_ssize_t i = 0; i < n; i++) {
        chunk[i] = (float)samples[i];
    }
    PyBuffer_Release(&pcm);

    int down = self->down;
    Py_ssize_t first = (down - self->phase) % down; /* first kept sample of this chunk */
    Py_ssize_t kept = n > first ? (n - first + down - 1) / down : 0;
    PyObject *result = PyBytes_FromStringAndSize(NULL, kept * self->up * 2);
    if (result == NULL) {
        return NULL;
    }
    int16_t *out = (int16_t *)PyBytes_AS_STRING(result);
    if (self->up > 1) {
        self->kernels->run_up(self->buffer, self->bank, self->branch, self->up, n, out);
    } else if (kept) {
        Py_ssize_t width = (kept + BLOCK - 1) / BLOCK * BLOCK + self->sub;
        if (fill_lanes(self, first, width) < 0) {
            Py_DECREF(result);
            return NULL;
        }
        self->kernels->run_down(self->lanes, width, self->bank, self->sub, down, kept, out);
    }
    memmove(self->buffer, self->buffer + n, (size_t)history * sizeof(float));
    self->phase = (int)((self->phase + n) % down);
    return result;
}

static PyObject *
PolyphaseFIR_reset(PolyphaseFIR *self, PyObject *Py_UNUSED(ignored))
{
    if (self->buffer != NULL) {
        memset(self->buffer, 0, (size_t)(self->branch - 1) * sizeof(float));
    }
    self->phase = 0;
    Py_RETURN_NONE;
}

static PyMethodDef PolyphaseFIR_methods[] = {
    {"process", (PyCFunction)PolyphaseFIR_process, METH_O,
     "int16 samples (bytes-like) in, int16 samples out: each chunk's share at once."},
    {"reset", (PyCFunction)PolyphaseFIR_reset, METH_NOARGS,
     "Forget the history and the down-sampling phase."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PolyphaseFIRType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gateway._polyphase.PolyphaseFIR",
    .tp_doc = PyDoc_STR("PolyphaseFIR(bank, up, down, *, kernel=None): streaming integer-ratio\n"
                        "resampler, int16; kernel is one of KERNELS (default: the first)."),
    .tp_basicsize = sizeof(PolyphaseFIR),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)PolyphaseFIR_init,
    .tp_dealloc = (destructor)PolyphaseFIR_dealloc,
    .tp_methods = PolyphaseFIR_methods,
};

static struct PyModuleDef polyphase_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gateway._polyphase",
    .m_doc = "Streaming polyphase FIR (integer-ratio int16 resampling); see gateway.audio.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__polyphase(void)
{
    if (PyType_Ready(&PolyphaseFIRType) < 0) {
        return NULL;
    }
    n_available = 0;
#ifdef HAVE_AVX2_KERNELS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        available[n_available++] = &kernels_avx2;
    }
#endif
    available[n_available++] = &kernels_portable;
    PyObject *module = PyModule_Create(&polyphase_module);
    if (module == NULL) {
        return NULL;
    }
    PyObject *names = PyTuple_New(n_available);
    if (names == NULL) {
        Py_DECREF(module);
        return NULL;
    }
    for (int i = 0; i < n_available; i++) {
        PyObject *name = PyUnicode_FromString(available[i]->name);
        if (name == NULL) {
            Py_DECREF(names);
            Py_DECREF(module);
            return NULL;
        }
        PyTuple_SET_ITEM(names, i, name);
    }
    int added = PyModule_AddObjectRef(module, "KERNELS", names);
    Py_DECREF(names);
    if (added < 0) {
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "PolyphaseFIR", (PyObject *)&PolyphaseFIRType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
