"""The request engine and the state every route reads: admission, the cost-bounded queue, backpressure and
cancellation (scheduler.py); ServerState (state.py). May import serving.backends (base), serving.model, serving.core."""
