"""The loader workers a run leaves behind."""
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter


def stop_loader_workers(runner) -> None:
    """Stop the persistent loader workers of the runner's loops now. A tool's process ends them
    as it exits; a run started from Python (``main(argv)``: tests, notebooks) leaves them to the
    garbage collector, which may finalize their queues before the iterator: the workers then
    never get the stop message, and each is killed only after torch's 5-s join timeout."""
    for name in ('_train_loop', '_val_loop', '_test_loop'):  # built loops only, not configs
        loader = getattr(getattr(runner, name, None), 'dataloader', None)
        workers = getattr(loader, '_iterator', None)  # kept between epochs when persistent
        if isinstance(workers, _MultiProcessingDataLoaderIter):
            workers._shutdown_workers()
            loader._iterator = None
