"""Backend code against the real TensorRT 10.x and 11.x Python bindings (CPU only; see conftest.py).

Also checks, without TensorRT, that the build, runner and info code reference only the
TensorRT names declared for their path (an AST walk), so the lists checked against the
bindings are the names the code really uses.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import BINDINGS, CUDA_BINDINGS, ROOT  # noqa: E402  (tests/backend/conftest.py)
from trtq.backend import calibrator, policy

CHECK_NAMES = (
    "import_through_trtq", "declared_api_exists_for_served_versions", "removed_names_present_in_10_gone_in_11",
    "calibrator_classes_on_11_say_why", "calibrators_subclass_the_real_bases",
    "get_batch_returns_pointers_in_order_then_none", "errors_in_get_batch_are_raised_after_the_build",
    "cache_round_trip_and_restamping", "build_without_a_gpu_is_backend_unavailable",
    "runner_without_a_gpu_is_backend_unavailable", "cli_info_names_tensorrt_and_what_is_missing",
    # every call trtq's build/runner code makes, checked against this version's pybind11 signatures
    "build_calls_match_signatures_fp32_fp16", "build_features_set_their_flags",
    "implicit_int8_calibrates_through_the_vtable",
    "percentile_on_the_implicit_path_is_trtq_calibrated", "explicit_path_flags_and_refusal_below_10",
    "mixed_precision_layers_stay_float", "dla_core_with_gpu_fallback", "timing_cache_refused_is_replaced",
    "prequantized_model_needs_no_calibration_data", "plugins_and_profile_errors_are_one_line",
    "signature_checker_catches_wrong_calls", "failed_build_names_first_and_last_tensorrt_error",
    "parser_errors_are_one_line", "runner_calls_match_signatures", "runner_handles_types_numpy_lacks",
    "calibrator_vtable_as_tensorrt_calls_it", "recurrent_state_and_scalar_inputs_on_their_own_batch_axes",
    "engine_io_reads_profile_through_signatures",
    # the CLI on engines: inspect, eval, the inputs an engine session feeds, plugins, version compatibility
    "inspect_shows_the_precision_of_each_layer", "eval_pads_to_the_engines_smallest_batch",
    "eval_int64_data_on_an_int32_engine_input", "engine_layouts_and_types_numpy_lacks_are_refused_with_real_data",
    "version_compatible_engine_loads_without_its_report", "corrupt_timing_cache_is_one_warning",
    "native_instancenorm_for_compatible_engines_on_8_6", "plugins_reach_eval_bench_and_inspect",
    # engines from elsewhere and the deployment paths
    "dla_core_option_for_engines_without_a_report", "engine_errors_are_worded_as_the_engines",
    "deploy_triton_falls_back_when_tensorrt_cannot_load_the_engine",
    "recurrent_profiles_on_their_own_batch_axes_on_every_path", "recurrent_and_scalar_engines_through_eval_and_bench",
    "shape_tensor_inputs_get_value_ranges_and_host_memory", "streamed_engine_with_its_state_fed_back",
    "bench_profile_spans_each_inputs_batch_axis",
)
IMPLICIT_MAJORS = (8, 10)
#: Checks that only apply to some majors (skipped elsewhere, by design).
ONLY_FOR = {"calibrator_classes_on_11_say_why": (11,),
            **{name: IMPLICIT_MAJORS for name in (
                "calibrators_subclass_the_real_bases", "get_batch_returns_pointers_in_order_then_none",
                "errors_in_get_batch_are_raised_after_the_build", "cache_round_trip_and_restamping",
                "implicit_int8_calibrates_through_the_vtable", "percentile_on_the_implicit_path_is_trtq_calibrated",
                "calibrator_vtable_as_tensorrt_calls_it", "recurrent_state_and_scalar_inputs_on_their_own_batch_axes")}}


def test_every_check_is_listed(trt_contract):
    ran = {name for result in trt_contract.values() for name in result["checks"]}
    assert ran == set(CHECK_NAMES), ran ^ set(CHECK_NAMES)


@pytest.mark.parametrize("check", CHECK_NAMES)
@pytest.mark.parametrize("version", list(BINDINGS))
def test_contract(trt_contract, version, check):
    outcome = trt_contract[version]["checks"].get(check, "missing: the check did not run")
    major = int(version.split(".")[0])
    if major not in ONLY_FOR.get(check, (major,)):
        assert outcome.startswith("skip"), outcome
        return
    assert outcome == "ok", f"TensorRT {version}: {outcome}"


def test_bindings_module_is_tensorrt_bindings(trt_contract):
    assert {result["module"] for result in trt_contract.values()} == {"tensorrt_bindings"}


# --- the code uses only declared names -----------------------------------------------------

#: Per module: variable names that hold TensorRT objects -> their TensorRT class.
TRT_VARIABLES = {
    "trtq/backend/build.py": {"builder": "Builder", "network": "INetworkDefinition", "parser": "OnnxParser",
                              "config": "IBuilderConfig", "profile": "IOptimizationProfile",
                              "timing_cache": "ITimingCache", "tensor": "ITensor"},
    "trtq/backend/runner.py": {"runtime": "Runtime", "engine": "ICudaEngine", "context": "IExecutionContext"},
    "trtq/backend/info.py": {"builder": "Builder"},
    "trtq/backend/engine_io.py": {"runtime": "Runtime", "loaded": "ICudaEngine"},
}
#: Modules that touch TensorRT objects themselves (the others reach them through these modules' functions).
DIRECT_ACCESS = ("trtq/backend/build.py", "trtq/backend/runner.py", "trtq/backend/info.py")


def _allowed(key: str) -> set:
    if key == "common":
        return set(policy.declared_names(policy.COMMON_BUILD_API))
    if key == "both":
        return set(policy.declared_names(policy.IMPLICIT_PATH_API + policy.EXPLICIT_PATH_API))
    return set(policy.declared_names(policy.PATH_API[key]))


def _references(module_path: str):
    """(qualified function name, TensorRT name) for every TensorRT access in the module."""
    tree = ast.parse((ROOT / module_path).read_text())
    variables = TRT_VARIABLES[module_path]
    found = []

    def chain(node):
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name):
            parts.append(node.id)
        return list(reversed(parts))

    def visit(scope: str, body):
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.name, node.body)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{scope}.{node.name}" if scope else node.name
                for sub in ast.walk(node):
                    if not isinstance(sub, ast.Attribute) or isinstance(getattr(sub, "_parent", None), ast.Attribute):
                        continue
                    parts = chain(sub)
                    if len(parts) < 2:
                        continue
                    if parts[0] == "trt" and not parts[1].startswith("__"):
                        member = [p for p in parts[1:3] if not p.startswith("__")]
                        found.append((name, ".".join(member)))
                    holder = parts[1] if parts[0] == "self" and len(parts) > 2 else parts[0]
                    rest = parts[2:] if parts[0] == "self" and len(parts) > 2 else parts[1:]
                    if holder in variables and rest:
                        found.append((name, f"{variables[holder]}.{rest[0]}"))

    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            child._parent = node
    visit("", tree.body)
    return sorted(set(found))


@pytest.mark.parametrize("module_path", sorted(TRT_VARIABLES))
def test_code_uses_only_declared_tensorrt_names(module_path):
    import importlib

    module = importlib.import_module(module_path[:-3].replace("/", "."))
    paths = module.FUNCTION_PATHS
    references = _references(module_path)
    if module_path in DIRECT_ACCESS:
        assert references, "the AST walk found no TensorRT access at all; is it still looking at the right code?"
    problems = [f"FUNCTION_PATHS names {f}, which {module_path} does not define" for f in paths
                if not _defines(module_path, f)]
    for function, name in references:
        if function not in paths:
            problems.append(f"{function} uses trt name {name} but is not in FUNCTION_PATHS")
        elif name not in _allowed(paths[function]):
            problems.append(f"{function} ({paths[function]} path) uses {name}, not declared for that path")
    assert not problems, "\n".join(problems)


def _defines(module_path: str, qualified: str) -> bool:
    tree = ast.parse((ROOT / module_path).read_text())
    scope = tree.body
    for part in qualified.split("."):
        found = [n for n in scope if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name == part]
        if not found:
            return False
        scope = found[0].body
    return True


def test_every_module_declaring_tensorrt_paths_is_walked():
    declaring = {str(p.relative_to(ROOT)) for p in sorted((ROOT / "trtq").rglob("*.py"))
                 if "FUNCTION_PATHS = " in p.read_text()}
    assert declaring and declaring <= set(TRT_VARIABLES), sorted(declaring - set(TRT_VARIABLES))


def test_declared_names_exist_in_some_binding(trt_contract):
    surfaces = {version: set(result["api"]) for version, result in trt_contract.items()}
    everything = set().union(*surfaces.values())
    declared = set(policy.declared_names([n for names in policy.PATH_API.values() for n in names]))
    assert not sorted(declared - everything)
    # the paths serving TensorRT 11 declare nothing it removed, and all of it exists there
    trt11 = next(s for v, s in surfaces.items() if v.startswith("11."))
    for path, majors in policy.PATH_SERVES.items():
        if 11 in majors:
            assert not set(policy.PATH_API[path]) & set(policy.REMOVED_IN_11), path
            missing = [n for n in policy.PATH_API[path] if not any(alt in trt11 for alt in n.split("|"))]
            assert not missing, (path, missing)


def test_calibrator_bases_are_declared():
    for base, member in calibrator.ALGORITHMS.values():
        assert base in policy.IMPLICIT_PATH_API
        assert f"CalibrationAlgoType.{member}" in policy.IMPLICIT_PATH_API


def test_cuda_runtime_names_are_declared_and_used():
    from trtq.backend import cuda

    source = (ROOT / "trtq/backend/cuda.py").read_text()
    used = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("cuda") and isinstance(node.value, (ast.Name, ast.Call)):
            used.add(node.attr)
    assert used <= set(cuda.CUDART_API), sorted(used - set(cuda.CUDART_API))


@pytest.mark.parametrize("check", ["declared_runtime_names_exist", "check_unpacks_results_and_maps_errors",
                                   "no_driver_is_backend_unavailable"])
@pytest.mark.parametrize("version", list(CUDA_BINDINGS))
def test_cuda_module_against_cuda_python(cuda_contract, version, check):
    outcome = cuda_contract[version].get(check, "the check did not run")
    assert outcome == "ok", f"cuda-bindings {version}: {outcome}"
