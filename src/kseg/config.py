"""One YAML config per experiment, typed: defaults, strict key and value checks, ``--set dotted.key=value``
overrides.

The config is declared once, as pydantic models (:class:`KsegConfig`, one model per section): each field's
type, range, default and help. From them come the defaults (:data:`DEFAULTS`), the check of every value when a
config is loaded (an unknown key, or a bool where an integer belongs, is one :class:`ConfigError` line naming the
file or ``--set``, the dotted key, what it must be and what it got) and the generated reference
``docs/CONFIG.md`` (:func:`reference`). Rules across fields or with their own vocabularies (the metrics a task
allows, fold indices below ``folds.n_splits``, the DICOM window) are checked next, in :func:`load_config`; the
free-form values (augmentation pipelines, TTA views, search grids) by the stages that own them, all before any
stage runs (``pipeline.check_config``).

Files and ``--set`` overrides are merged as plain trees (sections key by key, a free-form leaf — a mapping or
list typed ``Any`` — replaced as a whole); what the stages get is the validated :class:`KsegConfig`, read by
attribute (``cfg.train.lr``), so a misspelt key is an AttributeError (and a mypy error), not a silent ``None``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, Mapping, Optional, Sequence, Union

import yaml
from annotated_types import Ge, Gt, Le, Lt, MultipleOf
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, StrictBool, StrictInt, StrictStr, ValidationError
from pydantic.fields import FieldInfo

from .errors import ConfigError
from .run import RunDir

__all__ = ["Config", "KsegConfig", "DEFAULTS", "load_config", "validate", "as_tree", "describe", "reference", "get", "with_values",
           "data_path", "output_dir", "submission_path", "folds_path", "dump", "fingerprint", "is_int"]

Tree = dict[str, Any]  # a config as YAML holds it: nested mappings, before validation

# Value types. Strict: YAML's `true` is an int to Python (and would train one epoch), "3" is not a number.
Number = Annotated[float, Strict()]
PositiveInt = Annotated[StrictInt, Ge(1)]
NonNegativeInt = Annotated[StrictInt, Ge(0)]
PositiveNumber = Annotated[Number, Gt(0)]
Share = Annotated[Number, Ge(0), Le(1)]


class Words:
    """Metadata on a type: the words errors and the reference use for it, where the type's own would not say
    enough (a path, a file extension)."""

    def __init__(self, text: str) -> None:
        self.text = text


def _non_empty_path(value: str) -> str:
    if not value.strip() or "\x00" in value:
        raise ValueError("a path must be a non-empty string without NUL")
    return value


# A non-empty string without NUL; the stages resolve it (data.* against data.root).
PathStr = Annotated[StrictStr, AfterValidator(_non_empty_path), Words("a path (a non-empty string)")]
FreeMapping = Optional[dict[str, Any]]
# Every segmentation_models encoder halves the image five times: crops and tiles are multiples of 32.
STRIDE = 32
Stride = Annotated[StrictInt, Ge(STRIDE), MultipleOf(STRIDE), Words(f"a positive integer multiple of {STRIDE}")]


def _non_zero(value: int) -> int:
    if value == 0:
        raise ValueError("0 workers")
    return value


Workers = Annotated[StrictInt, AfterValidator(_non_zero), Words("a non-zero integer (-1 = all cores)")]

Task = Literal["instance", "binary", "multiclass", "multilabel"]
Unlisted = Literal["skip", "empty"]
Activation = Literal["auto", "sigmoid", "softmax"]
Loss = Literal["bce_dice", "bce_jaccard", "focal_dice", "focal_jaccard", "bce"]
Scheduler = Optional[Literal["plateau", "cosine"]]
Monitor = Literal["val_score", "val_loss"]
Strategy = Literal["auto", "default", "mirrored", "tpu"]
Pipeline = Literal["auto", "host", "graph"]
MixedPolicy = Literal["mixed_float16", "mixed_bfloat16"]
Orientation = Literal["auto", "free", "upright", "fixed"]
Norm = Literal["none", "percentile", "standardize"]
NormScope = Literal["channel", "image"]
RleOrder = Literal["C", "F", "F-relative"]
Unlabelled = Literal["background", "ignore"]
FoldSelection = Annotated[Union[Literal["all"], NonNegativeInt, list[NonNegativeInt]],
                          Words("'all', a fold index or a list of fold indices")]

UNLISTED: tuple[str, ...] = typing.get_args(Unlisted)
ACTIVATIONS: tuple[str, ...] = typing.get_args(Activation)
LOSSES: tuple[str, ...] = typing.get_args(Loss)
MONITORS: tuple[str, ...] = typing.get_args(Monitor)
STRATEGIES: tuple[str, ...] = typing.get_args(Strategy)
MIXED_POLICIES: tuple[str, ...] = typing.get_args(MixedPolicy)
ORIENTATIONS: tuple[str, ...] = typing.get_args(Orientation)
NORMS: tuple[str, ...] = typing.get_args(Norm)
NORM_SCOPES: tuple[str, ...] = typing.get_args(NormScope)
MIN_SCALE, MAX_SCALE = 0.25, 4.0


def _help(default: Any, text: str) -> Any:
    """A field's default and the help the reference prints (why the default, what the choices do)."""
    return Field(default, description=" ".join(text.split()))


def _section(model: type[BaseModel], alias: str | None = None) -> Any:
    """A nested section, documented by its model's docstring."""
    return Field(default_factory=model, alias=alias, description=" ".join((model.__doc__ or "").split()))


class Section(BaseModel):
    """A config section: every key declared, unknown keys an error."""

    # Validation reads an integer default as a float (32.0); fingerprint() writes integral floats back as
    # integers, so stage fingerprints of runs made before the typed config do not change.
    model_config = ConfigDict(extra="forbid")


class SchemaSection(Section):
    """data.schema: the CSV's columns and encoding; a preset (kseg.data.PRESETS) fills what is null."""

    preset: Optional[StrictStr] = _help(None, "dsb2018, sartorius, severstal, severstal2019, siim or tgs "
                                                     "(kseg.data.PRESETS)")
    id_col: Optional[StrictStr] = _help(None, "the image id column")
    rle_col: Optional[StrictStr] = _help(None, "the run-length encoded mask column")
    height_col: Optional[StrictStr] = _help(None, "a column holding each image's height, when the CSV has one")
    width_col: Optional[StrictStr] = _help(None, "a column holding each image's width")
    rle_order: Optional[RleOrder] = _help(None, """C (row-major, Sartorius), F (column-major, DSB 2018, TGS,
        Severstal) or F-relative (SIIM-ACR: starts counted from the previous run, "-1" = empty mask)""")
    class_col: Optional[StrictStr] = _help(None, """instance: the column of each image's class (one channel per
        class); multiclass: each row's class id (Severstal's ClassId)""")
    group_col: Optional[StrictStr] = _help(None, "images of one group (a slide, a patient) stay in one fold")
    submission_cols: Optional[list[StrictStr]] = _help(None, "the submission's header: (id, rle) or, multiclass, "
                                                       "(id, rle, class)")
    header: Optional[StrictBool] = _help(None, "false: train.csv has no header line, just id_col,rle_col (SIIM); "
                                               "null = true unless the preset says")
    unlabelled: Optional[Unlabelled] = _help(None, """multiclass: a pixel in no row is background (null =
        background unless the preset says) or ignore (void: left out of the loss and the metric, as CamVid's
        Unlabelled)""")
    joined_id: Optional[StrictStr] = _help(None, """multiclass: a file column joining the id and the class as
        <id>_<class> (Severstal 2019's ImageId_ClassId, preset severstal2019): split when read, and the submission
        lists every (image, class) pair joined""")


class DataSection(Section):
    """data: where the competition's files are, what its rows mean and how it is scored."""

    root: PathStr = _help("data", "the competition folder; the other data paths are relative to it")
    train_csv: PathStr = _help("train.csv", "the training masks, one RLE row per object (or per image, class)")
    train_dir: PathStr = _help("train", "the training images")
    test_dir: PathStr = _help("test", "the images to predict")
    image_ext: Annotated[Optional[StrictStr], Words("a file extension such as '.png' (or '' when ids carry it)")] = _help(".png", "appended to an id to name its image; blank or '' when ids "
                                                   "carry it")
    sample_submission: Optional[PathStr] = _help(None, "the competition's sample_submission.csv: its ids and order")
    test_truth: Optional[PathStr] = _help(None, "ground truth of the test images (the demo has it): kseg run then "
                                                "reports the test score")
    task: Task = _help("instance", """instance: one RLE row per object (Sartorius, DSB 2018, Airbus); binary: rows
        are the foreground of the image (TGS, ISBI), several rows of one image unioned; multiclass: exclusive
        classes, one row per (image, class present) with the class id in schema.class_col (CamVid, organs),
        scored by the mean IoU over classes; multilabel: the same rows, but classes may share pixels (Severstal,
        Understanding Clouds): a sigmoid per class, scored by Severstal's Dice per (image, class)""")
    metric: StrictStr = _help("auto", """the competition metric that validation, the OOF search and the reports
        optimise: auto (instance map_iou, binary dice, multiclass mean_iou_classes, multilabel dice_classes) or a
        name from
        kseg.metric.TASK_METRICS: f2_iou (Airbus), tgs_ap_iou (TGS), iou, dice (an instance run's union of
        objects), dice_classes (Severstal)""")
    classes: Optional[list[StrictStr]] = _help(None, """multiclass: the class names, class id k = the k-th name
        (ids 1..n; a row outside them is an error); null: ids 1..the highest id in train.csv, named by number""")
    unlisted: Unlisted = _help("skip", """images in train_dir that train.csv never names: skip them, or train on
        them as images without any mask (empty: Severstal lists only images with a defect, and its defect-free
        images teach the model and the OOF search what an empty prediction is worth)""")
    dicom_window: Any = _help(None, """DICOM images: null reads modality units (HU for CT) stretched per image by
        percentiles; [center, width] (e.g. [40, 400], soft tissue) or file (the file's WindowCenter/WindowWidth)
        maps them through a fixed window, so the same HU give the same grey in every slice""")
    schema_: SchemaSection = _section(SchemaSection, alias="schema")  # "schema" is a BaseModel method
    demo: FreeMapping = _help(None, """when set, kseg run generates the synthetic demo competition into data.root
        if it is missing (the arguments of kseg.demo.make_demo_data)""")


class FoldsSection(Section):
    """folds: how the training images are split for cross-validation."""

    n_splits: Annotated[StrictInt, Ge(2)] = _help(5, "K of K-fold")
    seed: NonNegativeInt = _help(42, "the split's random seed")
    file: Optional[PathStr] = _help(None, "a folds.csv (id,fold) to use instead of splitting; null: "
                                          "<output.dir>/folds.csv")
    allow_group_leak: StrictBool = _help(False, "a folds file with a group in two folds is a warning instead of "
                                                "an error")


class ScratchSection(Section):
    """model.scratch: the shape of kseg's own U-Net (model.arch unet_scratch)."""

    filters: Annotated[StrictInt, Ge(4), Le(256)] = _help(16, "filters of the first level, doubled per level")
    depth: Annotated[StrictInt, Ge(1), Le(5)] = _help(4, "downsamplings (inputs are padded to multiples of 32)")
    residual: StrictBool = _help(False, "residual blocks")
    se: StrictBool = _help(False, "squeeze-and-excitation on each block")
    attention: StrictBool = _help(False, "attention gates on the skips")


class ModelSection(Section):
    """model: the network and how images are normalised before it."""

    arch: StrictStr = _help("auto", """auto: Unet when encoder_weights gives pretrained weights, else
        unet_scratch; Unet, FPN or Linknet: segmentation_models with backbone and encoder_weights; unet_scratch:
        kseg's own U-Net for training from scratch, shaped by scratch""")
    backbone: StrictStr = _help("resnet34", "a segmentation_models backbone")
    encoder_weights: Optional[StrictStr] = _help("imagenet", "imagenet, a local .h5 file, or null (from scratch)")
    scratch: ScratchSection = _section(ScratchSection)
    init_from: Optional[PathStr] = _help(None, "a kseg weights file to start every fold from")
    encoder_freeze: StrictBool = _help(False, "keep the pretrained encoder's weights fixed")
    bn_momentum: Annotated[Number, Ge(0), Lt(1)] = _help(0.9, """BatchNorm's moving-average momentum; Keras'
        0.99 leaves the inference statistics wrong after short runs""")
    input_norm: Norm = _help("percentile", """per-image intensity normalisation before the backbone's own: none,
        percentile (stretch the 1st..99.8th percentile, as stardist/cellpose) or standardize""")
    input_norm_scope: NormScope = _help("channel", """what one stretch covers: channel (each channel its own,
        stardist) or image (all channels together, keeping an RGB photograph's colour balance)""")
    invert: Union[StrictBool, Literal["auto"]] = _help("auto", """invert images: false, true, or auto: learned
        from the training labels; when a set mixes bright objects on dark ground with dark on bright
        (fluorescence + H&E), a rule fitted on them picks the images to invert (written in plan.json)""")
    extra_channels: list[StrictStr] = _help([], """channels computed from the gray image and fed beside it
        (median, nlmeans, multi_otsu, yen; at most two): the input becomes [gray, extras..., gray]""")
    activation: Activation = _help("auto", """auto: softmax over the channels for data.task multiclass
        (exclusive classes), a sigmoid per channel otherwise (multilabel too); softmax or sigmoid force one""")


class SamplerSection(Section):
    """train.sampler: which images the training crops are drawn from."""

    class_power: Number = _help(0.5, """class k is drawn in proportion to count_k ** class_power: 0 = every class
        equally often, 1 = natural frequency""")
    empty_fraction: Optional[Share] = _help(None, "the share of draws from images without any mask (null: natural)")


DEFAULT_AUGMENT: list[dict[str, Any]] = [
    {"HorizontalFlip": {"p": 0.5}},
    {"VerticalFlip": {"p": 0.5}},
    {"RandomRotate90": {"p": 0.5}},
    {"Affine": {"scale": [0.9, 1.1], "rotate": [-15, 15], "p": 0.5}},
    {"RandomBrightnessContrast": {"p": 0.5}},
]


class TrainSection(Section):
    """train: how each fold is trained."""

    folds: FoldSelection = _help("all", """the folds kseg run trains: all, or fold indices (when compute is short,
        one fold trained for all of it beats K under-trained ones); prediction ensembles the trained folds""")
    size: Stride = _help(256, "the training crop (a multiple of 32: the encoder halves the image 5 times)")
    epochs: PositiveInt = _help(30, "epochs of train.steps_per_epoch steps")
    batch_size: PositiveInt = _help(8, """per replica (one GPU or TPU core): the global batch is batch_size x
        replicas, and train.lr is scaled by sqrt(replicas)""")
    steps_per_epoch: Optional[PositiveInt] = _help(None, """null: one pass over the fold's images, but at least
        min_steps_per_epoch steps (crops drawn with replacement), so a 30-image fold still gets enough optimizer
        steps and a 10,000-image one one pass""")
    min_steps_per_epoch: Optional[PositiveInt] = _help(50, "the least steps of an epoch when steps_per_epoch is null")
    budget_steps: Optional[PositiveInt] = _help(None, """a compute budget: optimizer steps for the whole run; the
        plan then trains as many of train.folds as get min_steps_per_fold steps each (at least one) and splits
        the budget between them""")
    min_steps_per_fold: Optional[PositiveInt] = _help(250, "the least steps a fold trains under budget_steps")
    scale: Union[Literal["auto"], Annotated[Number, Ge(MIN_SCALE), Le(MAX_SCALE)]] = _help("auto", """the scale
        at which the network sees the images: auto (objects with a median diameter above target_diameter px are
        downscaled to it, never upscaled) or a number; written to plan.json""")
    target_diameter: PositiveNumber = _help(32, "the median object diameter (px) that scale auto aims at")
    orientation: Orientation = _help("auto", """which flips and quarter turns augmentation and TTA may use: auto
        (from how much the labels prefer one half of the image; street scenes are upright), free, upright (up
        stays up) or fixed""")
    lr: PositiveNumber = _help(1.0e-3, "Adam's learning rate")
    scheduler: Scheduler = _help("cosine", """cosine: per-step cosine decay after a linear warm-up over the first
        warmup share of all steps; plateau: halve the learning rate when monitor stops improving; null: constant""")
    warmup: Annotated[Number, Ge(0), Lt(1)] = _help(0.05, "the share of all steps that warms the learning rate up")
    ema: Optional[Annotated[Number, Gt(0), Lt(1)]] = _help(None, """an exponential moving average of the weights
        (momentum per step, e.g. 0.99; null: off); validation and best.weights.h5 use the averaged weights""")
    monitor: Monitor = _help("val_score", """the checkpoint kept (best.weights.h5) and early stopping follow this:
        val_score (the competition metric on the validation images after postprocess.default) or val_loss""")
    val_images: Union[Literal["auto"], PositiveInt, None] = _help("auto", """whole validation images scored after
        every epoch: auto (as many as fit in 8 megapixels, at least 8), a number, or null: all. The OOF
        predictions always cover every one""")
    early_stopping: Optional[PositiveInt] = _help(8, "epochs without improvement of monitor before a fold stops")
    loss: Loss = _help("bce_dice", "the loss: a pixel term (bce, focal) plus a region term (dice, jaccard)")
    channel_weights: Union[Literal["auto"], list[Any], None] = _help(None, """loss weight per output channel:
        null, a list of numbers, or auto (multiclass: (1 / pixel frequency in the training fold) **
        channel_weight_power, mean 1, printed per fold)""")
    channel_weight_power: Share = _help(0.5, "the power of channel_weights auto")
    border_width: NonNegativeInt = _help(2, "how far (px) the border target reaches between touching instances")
    seed: NonNegativeInt = _help(42, "the seed of initialisation, crops and augmentation")
    workers: Optional[PositiveInt] = _help(None, "threads that prepare batches (null: from the CPU count)")
    strategy: Strategy = _help("auto", """auto: a TPU when one is attached, else every GPU (MirroredStrategy) when
        there are several, else the one device; default: one device; mirrored: every GPU, or every logical CPU
        device without one; tpu: TPUStrategy (an error without a TPU)""")
    jit_compile: StrictBool = _help(False, """XLA-compile the training step (fixed-size crops; prediction is not compiled,
        its image sizes vary): model.arch unet_scratch only, since XLA cannot compile the gradient of the
        nearest-neighbour upsampling of segmentation_models' decoders; a TPU compiles everything anyway. On a CPU
        such a run is reproducible only up to float rounding (XLA has no deterministic MaxPool gradient)""")
    steps_per_execution: PositiveInt = _help(1, """training steps run per call into TensorFlow (Keras'
        steps_per_execution): what keeps a TPU busy (e.g. 32); batch callbacks, and so the learning rate schedule,
        then move every that many steps""")
    pipeline: Pipeline = _help("auto", """the training input pipeline: host (albumentations in tf.data threads, any
        transform), graph (TensorFlow ops only, which a TPU can run: the crop and the train.augment transforms
        kseg.graph_input translates, a config error naming any other), auto: graph under a TPU, host otherwise""")
    mixed_precision: Union[StrictBool, MixedPolicy] = _help(False, """true: mixed_float16 on a GPU, mixed_bfloat16
        on a TPU, float32 on a CPU (which gains nothing from it, and says so); mixed_float16 or mixed_bfloat16
        forces that policy on any device""")
    sampler: SamplerSection = _section(SamplerSection)
    augment: list[Any] = _help(DEFAULT_AUGMENT, "the albumentations pipeline: a list of {Name: {arguments}}")
    verbose: Literal[0, 1, 2] = _help(1, "Keras' verbosity: 0 silent, 1 progress bar, 2 a line per epoch")


class PostprocessSection(Section):
    """postprocess: probabilities to masks or instances, and the grid the OOF search tries."""

    default: dict[str, Any] = _help({"fg_threshold": 0.5, "seed_threshold": 0.5, "min_area": 16, "fill_holes": True},
                                    "the parameters used before (and without) the OOF search")
    grid: dict[str, Any] = _help({"fg_threshold": [0.3, 0.4, 0.5, 0.6], "seed_threshold": [0.3, 0.5, 0.7, 0.8],
                                  "min_area": [0, 16, 48, 96], "empty_area": [0, 128, 512, 2048]},
                                 """the values the OOF search tries, per parameter of the task's post-processing
                                 (kseg.postprocess.POSTPROCESSORS): instance fg_threshold, seed_threshold, min_area;
                                 binary fg_threshold, min_area, empty_area (a mask under it is no mask); multiclass
                                 and multilabel class_threshold (e.g. [null, 0.3, 0.5]; null = the argmax, multilabel
                                 0.5) and min_area, per class""")
    per_class: StrictBool = _help(True, "search the parameters per image class as well")
    n_jobs: Workers = _help(2, "processes of the OOF search (-1 = all cores)")


class PredictSection(Section):
    """predict: the test images."""

    folds: FoldSelection = _help("all", "the folds whose models are ensembled")
    tile: Optional[Stride] = _help(None, """predict images larger than this in overlapping windows (a multiple
        of 32; null: whole images). Every TTA view of an image goes through the model as one batch""")


class OutputSection(Section):
    """output: where the run is written."""

    dir: PathStr = _help("runs/experiment", "the run folder: folds, OOF, plan, report, submission")
    submission: Optional[PathStr] = _help(None, "the submission file; null: <output.dir>/submission.csv")


class KaggleSection(Section):
    """kaggle: the competition kseg's kernels are built for."""

    competition: Optional[StrictStr] = _help(None, "the competition slug (checked by kseg kernel build)")
    infer_gpu: StrictBool = _help(False, "whether the inference kernel asks for a GPU (training kernels always do)")


class KsegConfig(Section):
    """One experiment."""

    name: StrictStr = _help("experiment", "the experiment's name, in reports and kernels")
    data: DataSection = _section(DataSection)
    folds: FoldsSection = _section(FoldsSection)
    model: ModelSection = _section(ModelSection)
    train: TrainSection = _section(TrainSection)
    postprocess: PostprocessSection = _section(PostprocessSection)
    tta: Annotated[list[Any], Field(min_length=1), Words("a non-empty list of view names")] = _help(["identity", "hflip", "vflip", "hvflip"], """the test-time augmentation views averaged
        (identity, hflip, vflip, hvflip, rot90, rot180, rot270, transpose)""")
    predict: PredictSection = _section(PredictSection)
    output: OutputSection = _section(OutputSection)
    kaggle: KaggleSection = _section(KaggleSection)


Config = KsegConfig
DEFAULTS: Tree = KsegConfig().model_dump(by_alias=True)  # the defaults as a YAML tree (tests, the reference)


def _number(value: float) -> str:
    return f"{value:g}"


def _bounded(noun: str, metadata: Sequence[Any]) -> str:
    """``an integer in [1, 5]``, ``a positive number``, ``a number in [0, 1)`` from annotated_types bounds."""
    low = next(((m.ge, "[") for m in metadata if isinstance(m, Ge)), None) or \
        next(((m.gt, "(") for m in metadata if isinstance(m, Gt)), None)
    high = next(((m.le, "]") for m in metadata if isinstance(m, Le)), None) or \
        next(((m.lt, ")") for m in metadata if isinstance(m, Lt)), None)
    article = "an" if noun[0] in "aeiou" else "a"
    if low and high:
        return f"{article} {noun} in {low[1]}{_number(low[0])}, {_number(high[0])}{high[1]}"
    if low and not high:
        if (low == (0, "(") or (noun == "integer" and low == (1, "["))):
            return f"a positive {noun}"
        if low == (0, "["):
            return f"a non-negative {noun}"
        return f"{article} {noun} {'>=' if low[1] == '[' else '>'} {_number(low[0])}"
    if high:
        return f"{article} {noun} {'<=' if high[1] == ']' else '<'} {_number(high[0])}"
    return f"{article} {noun}"


def _alternatives(annotation: Any, metadata: Sequence[Any] = ()) -> list[str]:
    """The values a type allows, one phrase each, in declaration order (null last)."""
    words = [m.text for m in metadata if isinstance(m, Words)]
    if words:
        return words
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *extra = typing.get_args(annotation)
        return _alternatives(base, [*metadata, *extra])
    if origin in (Union, types.UnionType):
        members = typing.get_args(annotation)
        phrases = [p for member in members if member is not type(None) for p in _alternatives(member)]
        return phrases + (["null"] if type(None) in members else [])
    if origin is Literal:
        return ["null" if v is None else str(v) if isinstance(v, int) else repr(v) for v in typing.get_args(annotation)]
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        nonempty = any(getattr(m, "min_length", 0) for m in metadata)
        kind = "a non-empty list" if nonempty else "a list"
        return [kind if item is Any else f"{kind} of {_plural(describe(item))}"]
    if origin is dict or annotation is dict:
        return ["a mapping"]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return ["a mapping of its keys"]
    if annotation is Any:
        return ["any value"]
    if annotation is type(None):
        return ["null"]
    if annotation is bool:
        return ["true", "false"]
    if annotation is int:
        return [_bounded("integer", metadata)]
    if annotation is float:
        return [_bounded("number", metadata)]
    if annotation is str:
        return ["a string"]
    raise TypeError(f"no words for the config type {annotation!r}")  # a new type needs its words here


def _plural(phrase: str) -> str:
    """``a string`` → ``strings``, ``an integer >= 0`` → ``integers >= 0`` (list items)."""
    head, _, tail = phrase.partition(" ")
    if head not in ("a", "an"):
        return phrase
    noun, _, rest = tail.partition(" ")
    if noun in ("positive", "non-negative"):
        noun2, _, rest2 = rest.partition(" ")
        return f"{noun} {noun2}s {rest2}".strip()
    return f"{noun}s {rest}".strip()


def describe(annotation: Any, metadata: Sequence[Any] = ()) -> str:
    """What a value of this type must be, in the words of :class:`ConfigError` and the reference:
    ``one of none, percentile, standardize``, ``a positive integer or null``, ``'auto' or a number in [0.25, 4]``.
    """
    phrases = _alternatives(annotation, metadata)
    if len(phrases) > 1 and all(p.startswith("'") or p in ("true", "false", "null") or p.isdigit() for p in phrases):
        bare = [p.strip("'") for p in phrases]  # a choice of words: one of plateau, cosine or null
        prefix = "" if "true" in phrases else "one of "
        return prefix + ", ".join(bare[:-1]) + " or " + bare[-1] if "null" in phrases or "true" in phrases \
            else prefix + ", ".join(bare)
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " or " + phrases[-1]


def _fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """A model's fields by the key a config writes (``schema`` for the ``schema_`` field)."""
    return {info.alias or name: info for name, info in model.model_fields.items()}


def _section_model(info: FieldInfo) -> type[BaseModel] | None:
    annotation = info.annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _sections(model: type[BaseModel] = KsegConfig, prefix: str = "") -> set[str]:
    """The dotted keys that are sections (merged key by key); every other key is a leaf, replaced whole."""
    out: set[str] = set()
    for key, info in _fields(model).items():
        nested = _section_model(info)
        if nested is not None:
            out |= {f"{prefix}{key}"} | _sections(nested, f"{prefix}{key}.")
    return out


SECTIONS = _sections()


def _merge(base: Tree, user: Mapping[str, Any], prefix: str = "") -> Tree:
    out = copy.deepcopy(base)
    for key, value in user.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(out.get(key), dict) and dotted in SECTIONS:
            out[key] = _merge(out[key], value, dotted + ".")
        else:
            out[key] = copy.deepcopy(value)
    return out


def _leaves(user: Mapping[str, Any], prefix: str = "") -> Iterable[str]:
    """The dotted keys a user mapping sets (into sections; a free-form leaf counts as one key)."""
    for key, value in user.items():
        dotted = f"{prefix}{key}"
        yield dotted
        if isinstance(value, Mapping) and dotted in SECTIONS:
            yield from _leaves(value, dotted + ".")


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``a.b.c=value``; the value is parsed as YAML so ``2``, ``null``, ``[a, b]`` get their types."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects dotted.key=value, got '{text}'")
    try:
        value = _yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value '{raw}' is not valid YAML ({exc})") from None
    return key.strip(), value


def _nest(dotted: str, value: Any) -> Tree:
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2's floats: ``lr: 1e-3`` is a number (PyYAML's YAML 1.1 reads it as a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _read_yaml(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        user = _yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); "
                          f"save the config as UTF-8") from None
    if not isinstance(user, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(user).__name__}")
    return user


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Defaults, then the YAML file, then each ``--set`` override in order, checked against :class:`KsegConfig`
    and the rules across fields; the first problem is one ConfigError naming where the value came from."""
    tree = copy.deepcopy(DEFAULTS)
    origins: dict[str, str] = {}
    if path is not None:
        user = _read_yaml(Path(path))
        tree = _merge(tree, user)
        origins.update(dict.fromkeys(_leaves(user), str(path)))
    for text in overrides:
        key, value = parse_override(text)
        patch = _nest(key, value)
        tree = _merge(tree, patch)
        origins.update(dict.fromkeys(_leaves(patch), f"--set {text}"))
    cfg = validate(tree, origins)
    if cfg.data.image_ext is None:
        cfg.data.image_ext = ""  # `image_ext:` left blank is the natural way to write "" (ids carry it)
    _check_rules(cfg)
    return cfg


def validate(tree: Mapping[str, Any], origins: Mapping[str, str] | None = None) -> Config:
    """The :class:`KsegConfig` of a config tree: every key declared and every value of its declared type and
    range, or one ConfigError: ``<file or --set>: <dotted.key> must be <what>, got <value>``."""
    try:
        return KsegConfig.model_validate(tree)
    except ValidationError as error:
        raise _config_error(error, tree, origins or {}) from None


def as_tree(cfg: Config) -> Tree:
    """The config as YAML writes it (``data.schema``, not the attribute ``schema_``)."""
    return cfg.model_dump(by_alias=True)


def _config_error(error: ValidationError, cfg: Mapping[str, Any], origins: Mapping[str, str]) -> ConfigError:
    """The first problem pydantic found, in kseg's words (pydantic's own text names its internal types)."""
    problem = error.errors()[0]
    model: type[BaseModel] | None = KsegConfig
    keys: list[str] = []
    info: FieldInfo | None = None
    for part in problem["loc"]:
        fields = _fields(model) if model is not None else {}
        if not isinstance(part, str) or part not in fields:
            if problem["type"] == "extra_forbidden" and model is not None:
                dotted = ".".join([*keys, str(part)])
                return _with_origin(f"unknown config key '{dotted}' (valid keys here: {', '.join(sorted(fields))})",
                                    dotted, origins)
            break
        keys.append(part)
        info = fields[part]
        model = _section_model(info)
    dotted = ".".join(keys)
    cause = (problem.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):
        return _with_origin(str(cause), dotted, origins)
    value = get(cfg, dotted) if keys else cfg
    what = describe(info.annotation, info.metadata) if info is not None else "a mapping of config sections"
    return _with_origin(f"{dotted or 'the config'} must be {what}, got {value!r}", dotted, origins)


def _with_origin(message: str, dotted: str, origins: Mapping[str, str]) -> ConfigError:
    """Prefix the file or ``--set`` that set ``dotted`` (or the section holding it)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        source = origins.get(".".join(parts[:end]))
        if source:
            return ConfigError(f"{source}: {message}")
    return ConfigError(message)


def _check_rules(cfg: Config) -> None:
    """The rules a field's type cannot state: the metric a task allows, class names, the DICOM window, fold
    indices below folds.n_splits."""
    from .dicom import check_window  # cheap: pydicom is imported only to read a file
    from .metric import task_metric  # lazily: metric imports this module

    task_metric(cfg.data.task, cfg.data.metric)
    names = cfg.data.classes
    if names is not None and (not names or not all(n.strip() for n in names) or len(set(names)) != len(names)):
        raise ConfigError(f"data.classes must be null or a list of distinct class names (class id k = the k-th), "
                          f"got {names!r}")
    check_window(cfg.data.dicom_window, "data.dicom_window")
    n_splits = cfg.folds.n_splits
    for dotted in ("train.folds", "predict.folds"):
        wanted = get(cfg, dotted)
        if isinstance(wanted, list) and len(set(wanted)) != len(wanted):
            raise ConfigError(f"{dotted} lists a fold twice: {wanted!r}")
        outside = [k for k in (wanted if isinstance(wanted, list) else [wanted]) if k != "all" and not 0 <= k < n_splits]
        if outside:
            raise ConfigError(f"{dotted}: fold(s) {outside} do not exist with folds.n_splits={n_splits} "
                              f"(folds are 0..{n_splits - 1})")


def is_int(value: Any) -> bool:
    """An integer that is not a bool (YAML ``true`` is an ``int`` to Python, and would run one epoch)."""
    return isinstance(value, int) and not isinstance(value, bool)


def reference() -> str:
    """The config reference (docs/CONFIG.md), generated from :class:`KsegConfig`: every key with its type, default
    and help. ``tests`` fail when the committed file is stale; ``python -m kseg.config`` rewrites it."""
    lines = ["# Config reference", "",
             "Generated from `kseg.config.KsegConfig` by `python -m kseg.config > docs/CONFIG.md`; a test fails when",
             "this file and the models differ. Every key is optional: a YAML config sets the keys it changes,",
             "`--set dotted.key=value` overrides one. Why the training defaults are what they are: README,",
             "\"Training defaults, and why\", and BENCHMARKS.md.", ""]

    def section(model: type[BaseModel], prefix: str) -> None:
        rows: list[str] = []
        nested: list[tuple[type[BaseModel], str]] = []
        for key, info in _fields(model).items():
            sub = _section_model(info)
            if sub is not None:
                nested.append((sub, f"{prefix}{key}."))
                continue
            default = json.dumps(info.default) if info.default is not None else "null"
            rows.append(f"| `{prefix}{key}` | {describe(info.annotation, info.metadata)} | `{default}` | "
                        f"{info.description or ''} |")
        if rows:
            title = prefix.rstrip(".") or "top level"
            lines.extend([f"## {title}", "", " ".join((model.__doc__ or "").split()), "",
                          "| key | must be | default | what it does |", "|---|---|---|---|", *rows, ""])
        for sub, sub_prefix in nested:
            section(sub, sub_prefix)

    section(KsegConfig, "")
    return "\n".join(lines).replace("\n\n\n", "\n\n")


def get(cfg: Config | Mapping[str, Any], dotted: str) -> Any:
    """``get(cfg, "train.epochs")``, in a :class:`KsegConfig` or a config tree."""
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, _attribute(type(node), part)) if isinstance(node, BaseModel) else node[part]
    return node


def _attribute(model: type[BaseModel], key: str) -> str:
    """The attribute of a YAML key (``schema`` is ``schema_``: ``BaseModel.schema`` is a method)."""
    return next((name for name, info in model.model_fields.items() if info.alias == key), key)


def with_values(cfg: Config, values: Mapping[str, Any]) -> Config:
    """A copy of ``cfg`` with dotted keys set (``{"data.root": ...}``): the same experiment pointed elsewhere.
    The values are not validated again: callers derive them from a validated config."""
    out = cfg.model_copy(deep=True)
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node: Any = out
        for part in parents:
            node = getattr(node, _attribute(type(node), part))
        setattr(node, _attribute(type(node), leaf), value)
    return out


def data_path(cfg: Config, key: str) -> Path | None:
    """Resolve ``data.<key>`` (train_csv, train_dir, test_dir, sample_submission) against ``data.root``."""
    value = getattr(cfg.data, key)
    if value is None:
        return None
    value = Path(value)
    return value if value.is_absolute() else Path(cfg.data.root) / value


def output_dir(cfg: Config) -> Path:
    return Path(cfg.output.dir)


def submission_path(cfg: Config) -> Path:
    """``output.submission``, or ``<output.dir>/submission.csv`` when unset."""
    value = cfg.output.submission
    return Path(value) if value else output_dir(cfg) / "submission.csv"


def folds_path(cfg: Config) -> Path:
    """``folds.file``, or ``<output.dir>/folds.csv`` when unset."""
    value = cfg.folds.file
    return Path(value) if value else RunDir.of(cfg).folds_csv


def dump(cfg: Config) -> str:
    return yaml.safe_dump(as_tree(cfg), sort_keys=False)


def _as_written(value: Any) -> Any:
    """Integral floats as ints: validation reads ``target_diameter: 32`` as 32.0, and a stage fingerprint must
    not change with that (runs made before the typed config would all look stale)."""
    if isinstance(value, dict):
        return {k: _as_written(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_written(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def fingerprint(cfg: Config, *sections: str, ignore: Sequence[str] = ()) -> str:
    """Short hash of the named dotted sections without the ``ignore``d dotted keys, used to tell whether a
    stage's outputs are up to date."""
    tree = _as_written(as_tree(cfg))
    picked = {s: get(tree, s) for s in sections}
    for dotted in ignore:
        section, _, rest = dotted.partition(".")
        node = picked.get(section)
        *parents, leaf = rest.split(".")
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return hashlib.sha1(json.dumps(picked, sort_keys=True, default=str).encode()).hexdigest()[:12]


if __name__ == "__main__":
    print(reference(), end="")
