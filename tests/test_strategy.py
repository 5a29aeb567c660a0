"""Training under tf.distribute strategies and mixed precision, on this CPU.

A one-device MirroredStrategy runs the code path of every multi-GPU kernel; two logical CPU devices make a
real two-replica run, in a subprocess because they must be configured before TensorFlow initialises its
devices. Each run trains fold 0 for one epoch, resumes to a second, writes the OOF, and is compared with
the default strategy. Forced mixed_float16 (which a CPU only runs when asked by name) trains, saves,
resumes, and its weights reload into a float32 model that predicts what the OOF holds.

Every run takes a global batch of 2 crops at the learning rate two replicas get, so all compare with one
default-strategy run. The learning rate is constant, so that the first epoch of a run that stops after it
is the first epoch of a run of two (a cosine schedule depends on the epoch count).
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kseg.config import validate
from kseg.demo import make_demo_data
from kseg.errors import ConfigError
from kseg.train import check_train_config, command_train, scaled_lr, steps_per_epoch
from test_train import HEIGHT, WIDTH, run_config

TINY = ("train.scheduler=null", "tta=[identity]")
LR_OF_TWO_REPLICAS = f"train.lr={scaled_lr(1e-3, 2)}"


def train_then_resume(data_root: Path, out: Path, *overrides: str) -> dict:
    """Fold 0 for one epoch, then resumed to two; the history, done.json and the OOF files it wrote."""
    command_train(run_config(data_root, out, "train.epochs=1", *TINY, *overrides), 0)
    (out / "fold0" / "done.json").unlink()  # as if interrupted after epoch 1 of 2
    command_train(run_config(data_root, out, "train.epochs=2", *TINY, *overrides), 0, resume=True)
    fold = out / "fold0"
    return {"loss": pd.read_csv(fold / "history.csv")["loss"].tolist(),
            "done": json.loads((fold / "done.json").read_text()),
            "oof": sorted(path.name for path in (fold / "oof").glob("*.npz"))}


# ------------------------------------------------------------------------------------------- config

@pytest.mark.parametrize("override, words", [
    ("train.strategy=gpu", r"train.strategy must be one of auto, default, mirrored, tpu, got 'gpu'"),
    ("train.mixed_precision=fp16", r"train.mixed_precision must be true, false, mixed_float16 or mixed_bfloat16, "
                                   r"got 'fp16'"),
    ("train.mixed_precision=1", r"train.mixed_precision must be .*, got 1"),
])
def test_bad_accelerator_config(override, words, tmp_path):
    with pytest.raises(ConfigError, match=words):
        check_train_config(run_config(tmp_path, tmp_path / "run", override))


def test_xla_needs_kseg_s_own_unet(tmp_path):
    with pytest.raises(ConfigError, match=r"train.jit_compile needs model.arch unet_scratch, got Unet: XLA cannot "
                                          r"compile the gradient .*ResizeNearestNeighborGrad"):
        check_train_config(run_config(tmp_path, tmp_path / "run", "train.jit_compile=true", "model.arch=Unet"))
    check_train_config(run_config(tmp_path, tmp_path / "run", "train.jit_compile=true"))  # auto: unet_scratch


def test_global_batch_shortens_the_pass_and_the_learning_rate_follows_the_square_root_rule():
    train_cfg = validate({"train": {"steps_per_epoch": None, "min_steps_per_epoch": 1, "batch_size": 8}}).train
    assert steps_per_epoch(train_cfg, 1000) == 125
    assert steps_per_epoch(train_cfg, 1000, replicas=2) == 63  # 16 crops a step
    assert scaled_lr(1e-3, 1) == 1e-3
    assert scaled_lr(1e-3, 8) == pytest.approx(1e-3 * math.sqrt(8))


def test_tpu_strategy_without_a_tpu_is_a_config_error():
    from kseg.train import _strategy

    with pytest.raises(ConfigError, match="train.strategy is tpu, but no TPU is attached"):
        _strategy("tpu")


def test_mixed_precision_on_a_cpu_says_it_trains_in_float32(capsys):
    import tensorflow as tf

    from kseg.train import _dtype_policy

    strategy = tf.distribute.get_strategy()
    assert _dtype_policy(True, strategy, has_gpu=False) == "float32"
    assert "no GPU or TPU, so training runs in float32" in capsys.readouterr().out
    assert _dtype_policy(True, strategy, has_gpu=True) == "mixed_float16"
    assert _dtype_policy("mixed_bfloat16", strategy, has_gpu=False) == "mixed_bfloat16"
    assert _dtype_policy(False, strategy, has_gpu=True) == "float32"


# ---------------------------------------------------------------------------------------- real runs

@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_demo_data(tmp_path_factory.mktemp("demo"), seed=0, n_train=8, n_test=2, height=HEIGHT, width=WIDTH)


@pytest.fixture(scope="module")
def default_loss(data_root, tmp_path_factory) -> list[float]:
    """The loss of each epoch of fold 0 trained for two epochs straight on one device, batch 2."""
    out = tmp_path_factory.mktemp("default") / "run"
    command_train(run_config(data_root, out, "train.epochs=2", "train.strategy=default", LR_OF_TWO_REPLICAS, *TINY), 0)
    return pd.read_csv(out / "fold0" / "history.csv")["loss"].tolist()


@pytest.mark.slow
def test_one_device_mirrored_strategy_trains_resumes_and_matches_the_default(data_root, default_loss, tmp_path):
    run = train_then_resume(data_root, tmp_path / "run", "train.strategy=mirrored", LR_OF_TWO_REPLICAS)
    done = run["done"]
    assert (done["strategy"], done["replicas"], done["batch_per_replica"], done["global_batch"]) == (
        "MirroredStrategy", 1, 2, 2)
    assert done["epochs"] == 2 and len(run["oof"]) == done["oof_images"] == 4
    assert run["loss"][0] == pytest.approx(default_loss[0], rel=1e-5)
    assert run["loss"][1] == pytest.approx(default_loss[1], rel=0.05)  # Adam's moments restart on resume


@pytest.mark.slow
def test_xla_compiled_training_trains_resumes_and_matches_the_default(data_root, default_loss, tmp_path, capsys):
    run = train_then_resume(data_root, tmp_path / "run", "train.jit_compile=true", "train.strategy=default",
                            LR_OF_TWO_REPLICAS)
    assert "the training step is compiled with XLA" in capsys.readouterr().out
    assert run["done"]["epochs"] == 2 and len(run["oof"]) == run["done"]["oof_images"] == 4
    assert run["loss"][0] == pytest.approx(default_loss[0], rel=1e-3)  # XLA fuses ops: float rounding differs
    assert run["loss"][1] == pytest.approx(default_loss[1], rel=0.05)  # Adam's moments restart on resume


@pytest.mark.slow
def test_several_steps_per_execution_train_validate_resume_and_match_the_default(data_root, default_loss, tmp_path):
    run = train_then_resume(data_root, tmp_path / "run", "train.steps_per_execution=2", "train.strategy=default",
                            LR_OF_TWO_REPLICAS)
    history = pd.read_csv(tmp_path / "run" / "fold0" / "history.csv")
    assert history["val_score"].notna().all()  # validation predicted whole images, one batch each
    assert run["done"]["epochs"] == 2 and len(run["oof"]) == run["done"]["oof_images"] == 4
    assert run["loss"][0] == pytest.approx(default_loss[0], rel=1e-5)
    assert run["loss"][1] == pytest.approx(default_loss[1], rel=0.05)


TWO_CPU_DEVICES = """
import json, sys
from pathlib import Path
import kseg
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])
from test_strategy import train_then_resume
run = train_then_resume(Path(sys.argv[2]), Path(sys.argv[3]), "train.strategy=mirrored", "train.batch_size=1")
print(json.dumps(run))
"""


@pytest.mark.slow
def test_two_replica_mirrored_strategy_trains_resumes_and_matches_the_default(data_root, default_loss, tmp_path):
    """1 crop on each of 2 CPU devices at train.lr, against 2 crops on one at the learning rate 2 replicas get."""
    result = subprocess.run([sys.executable, "-c", TWO_CPU_DEVICES, str(Path(__file__).parent), str(data_root),
                             str(tmp_path / "run")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads(result.stdout.strip().splitlines()[-1])
    done = run["done"]
    assert (done["replicas"], done["batch_per_replica"], done["global_batch"]) == (2, 1, 2)
    assert done["lr"] == pytest.approx(scaled_lr(1e-3, 2))
    assert done["epochs"] == 2 and len(run["oof"]) == done["oof_images"] == 4
    # Not equal: each replica normalises its BatchNorm and its Dice over one crop instead of two.
    assert run["loss"][0] == pytest.approx(default_loss[0], rel=0.03)
    assert run["loss"][1] == pytest.approx(default_loss[1], rel=0.05)


@pytest.mark.slow
def test_forced_mixed_float16_trains_resumes_and_its_weights_predict_in_float32(data_root, default_loss, tmp_path):
    import tf_keras as keras

    from kseg.data import read_image
    from kseg.predict import load_fold_models, model_input
    from kseg.tta import predict_image

    run = train_then_resume(data_root, tmp_path / "run", "train.mixed_precision=mixed_float16", LR_OF_TWO_REPLICAS)
    assert run["done"]["dtype_policy"] == "mixed_float16" and len(run["oof"]) == 4
    assert run["loss"][0] == pytest.approx(default_loss[0], rel=0.01)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored for what runs next

    # The saved weights, reloaded into a float32 model, predict what the float16 model wrote as OOF.
    cfg = run_config(data_root, tmp_path / "run", *TINY)
    [predict] = load_fold_models(cfg)
    oof_file = tmp_path / "run" / "fold0" / "oof" / run["oof"][0]
    image = read_image(data_root / "train" / oof_file.name.replace(".npz", ".png"))
    probs = predict_image(predict, model_input(cfg)(image), ["identity"])
    oof = np.load(oof_file)["plain"]
    assert probs.shape == oof.shape == (HEIGHT, WIDTH, 5)
    error = np.abs(probs * 255 - oof)  # in uint8 steps; float16 rounds a few logits near saturation further
    assert np.mean(error <= 3) > 0.999 and error.max() < 16


# ------------------------------------------------------------------------------------------- weight average

def test_averaged_weights_are_swapped_in_and_the_live_weights_come_back():
    import tf_keras as keras

    from kseg.train import _averaged_weights

    model = keras.Sequential([keras.layers.Dense(3, input_shape=(4,))])
    model.compile(optimizer=keras.optimizers.Adam(0.1, use_ema=True, ema_momentum=0.5), loss="mse")
    rng = np.random.default_rng(0)
    for _ in range(6):  # train_on_batch, not fit: fit ends by copying the average into the model
        model.train_on_batch(rng.random((4, 4)), rng.random((4, 3)))
    live = [w.copy() for w in model.get_weights()]
    averages = [v.numpy() for v in model.optimizer._model_variables_moving_average]
    with _averaged_weights(model):
        inside = model.get_weights()
    for before, average, during, after in zip(live, averages, inside, model.get_weights()):
        np.testing.assert_array_equal(during, average)
        np.testing.assert_array_equal(after, before)
    assert not all(np.array_equal(a, b) for a, b in zip(averages, live))


def test_bad_weight_average_momentum_is_a_config_error(tmp_path):
    from kseg.config import load_config

    for value in ("1.0", "0", "true", "fast"):
        with pytest.raises(ConfigError, match=r"train.ema must be a number in \(0, 1\) or null"):
            check_train_config(load_config(None, [f"train.ema={value}"]))


@pytest.mark.slow
def test_training_with_a_weight_average_follows_the_live_weights(data_root, default_loss, tmp_path):
    """The average is validated and kept as best.weights.h5; training itself continues from the live weights,
    so its losses are the default run's, and last.weights.h5 (what --resume continues) is not the average."""
    out = tmp_path / "run"
    command_train(run_config(data_root, out, "train.epochs=2", "train.strategy=default", LR_OF_TWO_REPLICAS,
                             "train.ema=0.5", *TINY), 0)
    loss = pd.read_csv(out / "fold0" / "history.csv")["loss"].tolist()
    assert loss == pytest.approx(default_loss, rel=1e-5)
    assert (out / "fold0" / "best.weights.h5").read_bytes() != (out / "fold0" / "last.weights.h5").read_bytes()
