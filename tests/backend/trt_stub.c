/* Stand-ins for the nine factory symbols TensorRT's Python bindings link against.
 * Each returns NULL/0: `import tensorrt_bindings` works (enums, flags, pybind11 base
 * classes are real), while trt.Builder(...) / trt.Runtime(...) raise. Built by
 * tests/backend/conftest.py as libnvinfer.so.N, libnvinfer_plugin.so.N and
 * libnvonnxparser.so.N for the contract tests; never shipped. */
#include <stddef.h>

void *createInferBuilder_INTERNAL(void *logger, int version) { (void)logger; (void)version; return NULL; }
void *createInferRuntime_INTERNAL(void *logger, int version) { (void)logger; (void)version; return NULL; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { (void)engine; (void)logger; (void)version; return NULL; }
void *getBuilderPluginRegistry(int capability) { (void)capability; return NULL; }
void *getPluginRegistry(void) { return NULL; }
int initLibNvInferPlugins(void *logger, const char *ns) { (void)logger; (void)ns; return 0; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { (void)network; (void)logger; (void)version; return NULL; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { (void)refitter; (void)logger; (void)version; return NULL; }
int getNvOnnxParserVersion(void) { return 0; }
