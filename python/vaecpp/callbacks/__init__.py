"""Training callbacks with Keras's hook names, one file per concern.

``fit`` calls ``on_train_begin``, ``on_epoch_begin(epoch)``, ``on_test_begin`` and
``on_test_end(logs)`` around an epoch's validation, ``on_epoch_end(epoch, logs)`` and
``on_train_end``; a callback may set ``model.stop_training = True`` to stop after the epoch.

``on_train_batch_end(step, logs)`` gets the model's global optimizer step (``vae.step``, also
``vae.optimizer.iterations``: steps done since the optimizer was compiled, across ``fit`` calls)
and the running means of the epoch so far. With streamed data (generators, data sources) it runs
after every batch. With arrays a whole epoch runs inside the C++ engine, which calls back at most
every 0.1 s and after the last batch: there the hook is **throttled** and sees only some steps,
so count steps from the ``step`` argument rather than from calls. Setting
``model.stop_training`` in it ends the epoch.

=====================  ======================================================================
``base``               Callback, CallbackList, Monitor (the base of metric watchers)
``history``            History
``progress``           ProgressBar (``verbose=1`` and ``2``)
``early_stopping``     EarlyStopping
``checkpoint``         ModelCheckpoint, PeriodicCheckpoint
``csv_logger``         CSVLogger
``lambda_callback``    LambdaCallback
``terminate_on_nan``   TerminateOnNaN
``learning_rate``      LearningRateScheduler, ReduceLROnPlateau
``images``             ImageSnapshots
``swap_ema_weights``   SwapEMAWeights (validate with the optimizer's moving average, use_ema)
``tensorboard``        TensorBoard (needs the optional tensorboardX: ``vaecpp[tensorboard]``)
=====================  ======================================================================
"""

from .base import Callback, CallbackList, Monitor, has_batch_hook
from .checkpoint import ModelCheckpoint, PeriodicCheckpoint
from .csv_logger import CSVLogger
from .early_stopping import EarlyStopping
from .history import History
from .images import ImageSnapshots
from .lambda_callback import LambdaCallback
from .learning_rate import LearningRateScheduler, ReduceLROnPlateau
from .progress import ProgressBar, format_logs
from .swap_ema_weights import SwapEMAWeights
from .tensorboard import TensorBoard
from .terminate_on_nan import TerminateOnNaN

__all__ = [
    "Callback", "History", "ProgressBar", "EarlyStopping", "ModelCheckpoint", "LambdaCallback",
    "CSVLogger", "TerminateOnNaN", "LearningRateScheduler", "ReduceLROnPlateau",
    "PeriodicCheckpoint", "ImageSnapshots", "TensorBoard", "SwapEMAWeights",
]
