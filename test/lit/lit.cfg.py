# lit configuration for kiln's FileCheck tests.
import os
import lit.formats

config.name = "kiln"
config.test_format = lit.formats.ShTest(True)
config.suffixes = [".mlir", ".test"]
config.excludes = ["Inputs", "lit.cfg.py", "lit.site.cfg.py"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.kiln_obj_root, "test", "lit")

config.environment["PATH"] = os.pathsep.join(
    [os.path.join(config.kiln_obj_root, "bin"), config.llvm_tools_dir, config.environment.get("PATH", os.environ["PATH"])])
config.substitutions.append(("%python", config.python))
config.substitutions.append(("%inputs", os.path.join(config.test_source_root, "Inputs")))
if config.kiln_aarch64_bin and os.path.exists(os.path.join(config.kiln_aarch64_bin, "kiln-run")):
    config.available_features.add("aarch64-runtime")
    config.substitutions.append(("%kiln-run-aarch64",
                                 "qemu-aarch64 -L /usr/aarch64-linux-gnu " + os.path.join(config.kiln_aarch64_bin, "kiln-run")))
