/* A host-memory stand-in for the NVIDIA driver's libcuda.so.1, for testing trtq's pycuda layer with
 * the real pycuda on a CPU machine: "device" memory is malloc'ed, copies are memcpy, streams and
 * events are counters, one device ("trtq fake GPU", sm_87). TRTQ_FAKE_CUDA_NODEVICE=1 makes cuInit
 * fail as on a machine without a GPU. Only the functions trtq's pycuda layer reaches are defined
 * (pycuda is imported with RTLD_LAZY). Built by tests/backend/conftest.py; never shipped. */
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
static size_t live_bytes = 0;
static int ctx_token = 1, stream_token = 1, event_token = 1;

CUresult cuInit(unsigned int flags) { (void)flags; return getenv("TRTQ_FAKE_CUDA_NODEVICE") ? 100 : 0; }
CUresult cuGetErrorString(CUresult error, const char **text) {
    *text = error == 100 ? "no CUDA-capable device is detected" : error == 2 ? "out of memory" : "fake error";
    return 0; }
CUresult cuGetErrorName(CUresult error, const char **text) { return cuGetErrorString(error, text); }
CUresult cuDriverGetVersion(int *version) { *version = 12060; return 0; }
CUresult cuDeviceGetCount(int *count) { *count = 1; return 0; }
CUresult cuDeviceGet(int *device, int ordinal) { if (ordinal != 0) return 101; *device = 0; return 0; }
CUresult cuDeviceGetName(char *name, int len, int device) { (void)device; strncpy(name, "trtq fake GPU", len); return 0; }
CUresult cuDeviceComputeCapability(int *major, int *minor, int device) { (void)device; *major = 8; *minor = 7; return 0; }
CUresult cuDeviceGetAttribute(int *value, int attribute, int device) {
    (void)device; *value = attribute == 75 ? 8 : attribute == 76 ? 7 : 1; return 0; }
CUresult cuDeviceTotalMem_v2(size_t *bytes, int device) { (void)device; *bytes = (size_t)8 << 30; return 0; }
CUresult cuDevicePrimaryCtxRetain(void **ctx, int device) { (void)device; *ctx = &ctx_token; return 0; }
CUresult cuDevicePrimaryCtxRelease_v2(int device) { (void)device; return 0; }
CUresult cuCtxPushCurrent_v2(void *ctx) { (void)ctx; return 0; }
CUresult cuCtxPopCurrent_v2(void **ctx) { if (ctx) *ctx = &ctx_token; return 0; }
CUresult cuCtxGetCurrent(void **ctx) { *ctx = &ctx_token; return 0; }
CUresult cuCtxGetDevice(int *device) { *device = 0; return 0; }
CUresult cuCtxSynchronize(void) { return 0; }
CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total) {
    *total = (size_t)8 << 30; *free_bytes = *total - live_bytes; return 0; }
CUresult cuMemAlloc_v2(CUdeviceptr *ptr, size_t bytes) {
    if (bytes > ((size_t)8 << 30)) return 2;  /* CUDA_ERROR_OUT_OF_MEMORY */
    void *p = malloc(bytes + sizeof(size_t)); if (!p) return 2;
    *(size_t *)p = bytes; live_bytes += bytes; *ptr = (CUdeviceptr)((char *)p + sizeof(size_t)); return 0; }
CUresult cuMemFree_v2(CUdeviceptr ptr) {
    char *p = (char *)ptr - sizeof(size_t); live_bytes -= *(size_t *)p; free(p); return 0; }
CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) { memcpy((void *)dst, src, n); return 0; }
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, void *s) { (void)s; return cuMemcpyHtoD_v2(dst, src, n); }
CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) { memcpy(dst, (const void *)src, n); return 0; }
CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, void *s) { (void)s; return cuMemcpyDtoH_v2(dst, src, n); }
CUresult cuStreamCreate(void **stream, unsigned int flags) { (void)flags; *stream = &stream_token; return 0; }
CUresult cuStreamDestroy_v2(void *stream) { (void)stream; return 0; }
CUresult cuStreamSynchronize(void *stream) { (void)stream; return 0; }
CUresult cuStreamQuery(void *stream) { (void)stream; return 0; }
CUresult cuEventCreate(void **event, unsigned int flags) { (void)flags; *event = &event_token; return 0; }
CUresult cuEventDestroy_v2(void *event) { (void)event; return 0; }
CUresult cuEventRecord(void *event, void *stream) { (void)event; (void)stream; return 0; }
CUresult cuEventSynchronize(void *event) { (void)event; return 0; }
CUresult cuEventQuery(void *event) { (void)event; return 0; }
CUresult cuEventElapsedTime(float *ms, void *start, void *end) { (void)start; (void)end; *ms = 0.25f; return 0; }
CUresult cuEventElapsedTime_v2(float *ms, void *start, void *end) { return cuEventElapsedTime(ms, start, end); }
