"""llama.cpp's plain CPU path for the scripts that run it through llama-cpp-python
(arch_reference.py, arch_lora_check.py, kquant_reference.py, llamacpp_bench.py).

`no_extra_buffer_types()` turns llama.cpp's "extra" CPU buffer types (AMX, the repacked
Q4_0/Q4_K/IQ4_NL/Q8_0 layouts) off for every model loaded afterwards: this VM reports AMX but does
not grant it, and llama.cpp's AMX matmul segfaults on the first eval (2026-12-06). References are
then llama.cpp's plain `vec_dot` path for every type; for speed, Q4_1 has no repacked layout, so
on other CPUs this only drops AMX.
"""

import llama_cpp


def no_extra_buffer_types():
    low = llama_cpp.llama_cpp  # the module llama_cpp.Llama reads its defaults from
    default_params = low.llama_model_default_params

    def model_params():
        p = default_params()
        p.use_extra_bufts = False
        return p

    low.llama_model_default_params = model_params
