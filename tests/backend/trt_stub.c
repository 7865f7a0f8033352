/* Stand-ins for the nine factory symbols TensorRT's Python bindings link against.
 * Each returns NULL/0: `import tensorrt_bindings` works (enums, flags, pybind11 base
 * classes are real), while trt.Builder(...) / trt.Runtime(...) raise. Built by
 * tests/backend/conftest.py as libnvinfer.so.N, libnvinfer_plugin.so.N and
 * libnvonnxparser.so.N (and libnvparsers.so.8 for 8.6) for the contract tests; never shipped. */
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

/* TensorRT 8.6's bindings also link libnvparsers.so.8 (UFF and Caffe parsers, gone in 10): four C++
 * functions, given their mangled names here so that one C file serves every version. */
void *trtq_stub_uff_parser(void) __asm__("_ZN11nvuffparser15createUffParserEv");
void *trtq_stub_uff_parser(void) { return NULL; }
void trtq_stub_field_map(void *self, const char *name, const void *data, int type, int length)
    __asm__("_ZN11nvuffparser8FieldMapC1EPKcPKvNS_9FieldTypeEi");
void trtq_stub_field_map(void *self, const char *name, const void *data, int type, int length) {
    (void)self; (void)name; (void)data; (void)type; (void)length; }
void *trtq_stub_caffe_parser(void) __asm__("_ZN14nvcaffeparser117createCaffeParserEv");
void *trtq_stub_caffe_parser(void) { return NULL; }
void trtq_stub_shutdown_protobuf(void) __asm__("_ZN14nvcaffeparser123shutdownProtobufLibraryEv");
void trtq_stub_shutdown_protobuf(void) {}
