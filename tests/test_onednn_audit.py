"""bench/onednn_audit.py's parser on real oneDNN v3.7.3 verbose lines (TensorFlow 2.21, AVX-512).

No TensorFlow here: the lines were written by the audit's child on the default
training step (fp32 and bf16), and the parser is a pure function over lines.
"""
import pytest

from bench import onednn_audit as audit

CONV_BF16 = (
    "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core_bf16,"
    "forward_training,src:bf16::blocked:acdb::f0 wei:bf16:ap:blocked:AcdB16a2b::f0 "
    "bia:undef::undef::: dst:bf16::blocked:acdb::f0,attr-scratchpad:user,"
    "alg:convolution_direct,mb8_ic3oc16_ih256oh256kh3sh1dh0ph1_iw256ow256kw3sw1dw0pw1,8.25513")
CREATE_MISS = (
    "onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,brg_conv_fwd:avx512_core_bf16,"
    "forward_training,src:bf16::blocked:acdb::f0 wei:bf16:ap:blocked:AcdB16a2b::f0 "
    "bia:undef::undef::: dst:bf16::blocked:acdb::f0,attr-scratchpad:user,"
    "alg:convolution_direct,mb8_ic3oc16_ih256oh256kh3sh1dh0ph1_iw256ow256kw3sw1dw0pw1,0.718994")
CREATE_HIT = (
    "onednn_verbose,v1,primitive,create:cache_hit,cpu,reorder,jit:uni,undef,"
    "src:bf16::blocked:cdba::f0 dst:bf16::blocked:AcdB64a2b::f0,,,128x128x3x3,0.00195312")
REORDER = (
    "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32::blocked:cdba::f0 "
    "dst:f32::blocked:Acdb16a::f0,,,16x3x3x3,0.00292969")
GEMM_API = (
    "onednn_verbose,v1,primitive,exec,cpu,gemm_api,,undef,src_f32::blocked:ab:f0 "
    "wei_f32::blocked:ab:f0 dst_f32::blocked:ab:f0,attr-post-ops:sum:1 ,,216x288:288x33,"
    "0.0649414")
BN_BACKWARD = (
    "onednn_verbose,v1,primitive,exec,cpu,batch_normalization,bnorm_tbb_jit:avx512_core,backward,"
    "data:f32::blocked:acdb::f0 diff:f32::blocked:acdb::f0,,flags:CH,mb8ic256ih8iw8,0.226074")
POOL_BF16 = (
    "onednn_verbose,v1,primitive,exec,cpu,pooling,jit:avx512_core_bf16,forward_training,"
    "src:bf16::blocked:acdb::f0 dst:bf16::blocked:acdb::f0 ws:u8::blocked:acdb::f0,,"
    "alg:pooling_max,mb8ic16_ih256oh128kh2sh2dh0ph0_iw256ow128kw2sw2dw0pw0,4.5")
INFO = [
    "onednn_verbose,v1,info,oneDNN v3.7.3 (commit N/A)",
    "onednn_verbose,v1,info,cpu,isa:Intel AVX-512 with Intel DL Boost and bfloat16 support",
    "onednn_verbose,v1,primitive,info,template:operation,engine,primitive,implementation,"
    "prop_kind,memory_descriptors,attributes,auxiliary,problem_desc,exec_time",
    "onednn_verbose,v1,graph,info,template:operation,engine,partition_id,partition_kind,op_names,"
    "data_formats,logical_tensors,fpmath_mode,implementation,backend,exec_time"]


def test_parse_line_reads_every_field_of_an_execution():
    r = audit.parse_line(CONV_BF16 + "\n")
    assert (r.event, r.cache, r.kind, r.impl, r.prop) == (
        "exec", "", "convolution", "brg_conv_fwd:avx512_core_bf16", "forward_training")
    assert r.problem == "mb8_ic3oc16_ih256oh256kh3sh1dh0ph1_iw256ow256kw3sw1dw0pw1"
    assert r.ms == pytest.approx(8.25513)
    assert audit.dtypes(r) == "src:bf16 wei:bf16 dst:bf16"


def test_parse_line_creations_and_cache_outcome():
    miss, hit = audit.parse_line(CREATE_MISS), audit.parse_line(CREATE_HIT)
    assert (miss.event, miss.cache, miss.kind) == ("create", "miss", "convolution")
    assert (hit.event, hit.cache, hit.kind, hit.prop) == ("create", "hit", "reorder", "undef")


def test_gemm_api_lines_have_no_implementation_and_their_own_descriptor_layout():
    r = audit.parse_line(GEMM_API)
    assert (r.kind, r.impl, r.problem) == ("gemm_api", audit.NO_IMPL, "216x288:288x33")
    assert audit.memory_descs(r.mds) == [("src", "f32", "ab"), ("wei", "f32", "ab"),
                                         ("dst", "f32", "ab")]


def test_memory_descriptors_and_reorder_formats():
    r = audit.parse_line(REORDER)
    assert audit.reorder_formats(r) == "f32:cdba -> f32:Acdb16a"
    assert audit.memory_descs("bia:undef::undef::: wei:bf16:ap:blocked:AcdB16a2b::f0") == [
        ("bia", "undef", ""), ("wei", "bf16", "AcdB16a2b")]


@pytest.mark.parametrize("line", INFO + [
    "", "=====", "garbage,exec", "onednn_verbose,v1,primitive,exec,cpu,reorder",
    CONV_BF16.rsplit(",", 1)[0] + ",not-a-time", "I0000 port.cc:153] oneDNN custom operations"])
def test_other_lines_are_not_records(line):
    assert audit.parse_line(line) is None


def test_older_layouts_parse():
    v2 = REORDER.replace("onednn_verbose,v1,primitive,", "dnnl_verbose,")
    stamped = REORDER.replace(",v1,", ",v1,1796104728.073516,")
    assert audit.parse_line(v2).kind == audit.parse_line(stamped).kind == "reorder"


def log(*steps, warmup=()):
    """A child's stdout: the markers of split_steps around the given steps' lines."""
    out = INFO[:2] + ["setup noise", REORDER, audit.MARK + ',meta,{"precision": "bf16"}']
    for phase, step_list in (("warmup", warmup), ("timed", steps)):
        out.append(f"{audit.MARK},phase,{phase}")
        for lines in step_list:
            out += list(lines) + [f"{audit.MARK},step,0.5"]
    return out


def test_summarize_counts_per_timed_step():
    step = [CONV_BF16, REORDER, REORDER, BN_BACKWARD, POOL_BF16, CREATE_HIT, GEMM_API]
    report = audit.summarize(log(step, step, warmup=[[CREATE_MISS, REORDER]]))
    assert report["precision"] == "bf16" and report["steps"] == 2
    assert report["warmup_steps"] == 1 and report["wall_ms_per_step"] == 500.0
    assert report["onednn"][0] == "oneDNN v3.7.3 (commit N/A)"
    assert report["other_lines"] == 1  # "setup noise"
    conv = report["primitives"]["convolution"]["forward_training"]
    assert conv["executions_per_step"] == 1 and conv["each_step"] == [1, 1]
    assert conv["implementations"] == {"brg_conv_fwd:avx512_core_bf16": 1}
    assert conv["ms_per_step"] == pytest.approx(8.25513, abs=1e-4)
    assert report["primitives"]["batch_normalization"]["backward"]["executions_per_step"] == 1
    reorders = report["reorders"]
    assert (reorders["per_step"], reorders["each_step"], reorders["warmup_each_step"]) == (
        2, [2, 2], [1])
    assert reorders["formats"][0]["formats"] == "f32:cdba -> f32:Acdb16a"
    assert reorders["formats"][0]["dims"] == ["16x3x3x3"]
    creations = report["creations"]
    assert creations["each_step"] == [{"hit": 1}, {"hit": 1}]
    assert creations["warmup_each_step"] == [{"miss": 1}]
    assert creations["misses_in_timed_steps"] == 0
    assert report["executions_per_step"] == 6
    total = 8.25513 + 2 * 0.00292969 + 0.226074 + 4.5 + 0.0649414
    assert report["onednn_ms_per_step"] == pytest.approx(total, abs=1e-3)
    assert report["bf16"]["executions_per_step"] == 2
    assert report["bf16"]["ms_share"] == pytest.approx((8.25513 + 4.5) / total, abs=1e-3)
    assert [f for f in report["flags"] if f.startswith("gemm_api")]
    assert len(report["flags"]) == 1


def test_flags_name_ref_and_gemm_implementations_and_timed_misses():
    # real lines with the implementation edited: these kernels did not occur here
    ref_pool = POOL_BF16.replace("jit:avx512_core_bf16", "ref:any")
    gemm_conv = CONV_BF16.replace("brg_conv_fwd:avx512_core_bf16", "gemm:jit")
    gemm_reorder = REORDER.replace("jit:uni", "simple:any")
    report = audit.summarize(log([ref_pool, gemm_conv, gemm_reorder, CREATE_MISS]))
    flags = report["flags"]
    assert any("ref implementation: pooling forward_training ref:any on mb8ic16" in f
               for f in flags)
    assert any("gemm fallback: convolution forward_training gemm:jit on mb8_ic3oc16" in f
               for f in flags)
    assert any("missed the cache" in f for f in flags)
    assert report["creations"]["missed"] == [
        "convolution forward_training brg_conv_fwd:avx512_core_bf16 "
        "mb8_ic3oc16_ih256oh256kh3sh1dh0ph1_iw256ow256kw3sw1dw0pw1"]
    assert len(flags) == 3


def test_an_empty_log_is_a_report_with_a_flag():
    report = audit.summarize(["Traceback (most recent call last):"])
    assert report["steps"] == 0 and report["other_lines"] == 1
    assert report["flags"] and "no oneDNN execution" in report["flags"][0]
    assert audit.format_report(report)


def test_bf16_asked_but_nothing_ran_in_bf16_is_flagged():
    report = audit.summarize(log([REORDER, BN_BACKWARD]))  # meta: precision bf16
    assert report["flags"] == ["--precision bf16, but no oneDNN primitive ran in bfloat16"]
