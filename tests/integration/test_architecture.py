"""The package's import graph: no cycle, and no module imports a layer above its own.

Imports are read from the source with ``ast`` (module-level and function-level alike, since a function-level import
that climbs a layer is the same dependency, only later), so the test sees what the code says rather than what one
run happened to import.
"""
import ast
from pathlib import Path

import captionkit

PACKAGE_DIR = Path(captionkit.__file__).parent

# Bottom to top. A module may import modules of its own layer or below, never above (and never in a cycle); the
# longest prefix that matches a module's dotted name gives its layer. Modules of the application layer (training,
# evaluation, data import...) sit above the model; the command line is the top, and nothing imports it.
LAYERS = [
    ("leaf utilities", ["captionkit._about", "captionkit._ext", "captionkit.checks", "captionkit.safeio",
                        "captionkit.atomicfile", "captionkit.locking", "captionkit.allocation", "captionkit.parallel",
                        "captionkit.progress", "captionkit.gradient_check", "captionkit.metrics",
                        "captionkit.vocabulary", "captionkit.bundle.layout", "captionkit.layout",
                        "captionkit.checkpoint_container", "captionkit.cpu"]),
    ("numeric layers", ["captionkit.layers", "captionkit.pointwise", "captionkit.kernels", "captionkit.optim",
                        "captionkit.precision"]),
    ("backend", ["captionkit.backend"]),
    ("plugins", ["captionkit.plugins"]),
    ("cells and encoders", ["captionkit.cells", "captionkit.attention", "captionkit.encoders.base",
                            "captionkit.encoders.registry"]),
    ("model", ["captionkit.conditioning", "captionkit.spec", "captionkit.model", "captionkit.decoding"]),
    ("application", ["captionkit"]),
    ("command line", ["captionkit.cli"]),
]


def layer_of(name):
    """(index, layer name) of module ``name``: the layer of the longest prefix in LAYERS that matches it."""
    best = None
    for index, (layer, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index, layer)
    return best[1:]


def module_name(path):
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path, name, modules):
    """Dotted names of captionkit modules that the file at ``path`` (module ``name``) imports anywhere."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # ``from package import name``: the submodule when name is one, else package
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules}


def import_graph():
    sources = {module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}
    graph = {}
    for name, path in sources.items():
        # ``from captionkit.x import y`` names a module only when y is one; keep the names that are modules.
        graph[name] = imported_modules(path, name, sources) - {name}
    return graph


def cycles(graph):
    """The strongly connected components of ``graph`` with more than one module (Tarjan's algorithm, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_checker_finds_a_cycle_and_a_climb():
    # The checks below are only as good as this reader: it must see a cycle and a function-level import.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert layer_of("captionkit.cells.gated")[1] == "cells and encoders"
    assert layer_of("captionkit.training")[1] == "application"
    assert layer_of("captionkit.cli.train")[1] == "command line"


def test_function_level_imports_are_read(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from captionkit import model\n    import captionkit.cli\n")
    found = imported_modules(source, "captionkit.probe", {"captionkit.model", "captionkit.cli", "captionkit"})
    assert found == {"captionkit.model", "captionkit.cli"}


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_no_module_imports_a_layer_above_its_own():
    climbs = []
    for name, imports in sorted(import_graph().items()):
        level, layer = layer_of(name)
        for target in sorted(imports):
            target_level, target_layer = layer_of(target)
            if target_level > level:
                climbs.append(f"{name} ({layer}) imports {target} ({target_layer})")
    assert climbs == []


def test_the_kernels_package_keeps_its_public_names_and_imports_only_the_compiled_leaf():
    from captionkit import kernels

    # The names captionkit.kernels had as one module (before its split by concern), which callers import, and
    # those added since: affine_sample (self-critical training's sampling), soft attention on the engine, the bf16
    # product and the choice of its kernel.
    public = {"GatedCache", "adam_update", "adam_update_many", "affine_argmax", "affine_backward", "affine_forward",
              "affine_log_softmax_topk", "blas", "blas_threads", "capsule_problem", "gated_backward", "gated_forward",
              "gated_greedy_decode", "gated_step", "is_available", "rnn_backward", "rnn_forward", "rnn_step_forward",
              "sigmoid", "tanh", "temporal_softmax_affine_loss", "temporal_softmax_affine_nll",
              "word_embedding_backward", "word_embedding_forward", "affine_sample", "SoftAttendedCache",
              "soft_attended_backward", "soft_attended_forward", "soft_attended_greedy_decode", "soft_attended_step",
              "soft_attention_keys", "bf16_available", "bf16_matmul", "bf16_pack", "bf16_kernel", "bf16_kernels",
              "use_bf16_kernel"}
    constants = {"SOFT_PARAMETERS", "SOFT_STEP_PARAMETERS", "BF16_KERNELS"}
    assert set(kernels.__all__) == public | constants
    assert all(callable(getattr(kernels, name)) for name in public)
    assert all(isinstance(getattr(kernels, name), tuple) for name in constants)
    allowed = ("captionkit._ext", "captionkit.pointwise", "captionkit.checks", "captionkit.precision",
               "captionkit.kernels")
    outside = {f"{name} imports {target}" for name, imports in import_graph().items()
               if name.startswith("captionkit.kernels") for target in imports if not target.startswith(allowed)}
    assert outside == set()
