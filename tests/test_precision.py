"""--precision: bf16 turns on oneDNN's mixed precision rewrite in the training Session."""
import pytest
from tensorflow.core.protobuf import rewriter_config_pb2

from fcn_tf1 import cli, train_args
from fcn_tf1.config import RunConfig
from fcn_tf1.errors import ConfigError
from fcn_tf1.parallel import devices


def test_bf16_sets_the_rewrite_and_fp32_leaves_it_alone():
    on = rewriter_config_pb2.RewriterConfig.ON
    rewrite = devices.apply_precision(devices.session_config(), "bf16").graph_options
    assert rewrite.rewrite_options.auto_mixed_precision_onednn_bfloat16 == on
    plain = devices.apply_precision(devices.session_config(), "fp32").graph_options
    assert plain.rewrite_options.auto_mixed_precision_onednn_bfloat16 != on


def test_the_option_reaches_the_config_and_bad_values_are_refused():
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--precision", "bf16"])
    assert train_args.build_config(train_args.given_options(args))[0].precision == "bf16"
    with pytest.raises(ConfigError, match="precision='fp16' not one of fp32, bf16"):
        RunConfig(precision="fp16")
