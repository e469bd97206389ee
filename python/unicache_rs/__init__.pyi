from ._helpers import AsyncLock as AsyncLock
from ._helpers import Cache as Cache
from ._helpers import Lock as Lock
from ._helpers import LockError as LockError
from ._helpers import LockNotOwnedError as LockNotOwnedError
from ._unicache import write as write
from .aio import AsyncCache as AsyncCache
from .errors import BackendError as BackendError
from .errors import ClosedError as ClosedError
from .errors import ConnectionError as ConnectionError
from .errors import CorruptError as CorruptError
from .errors import Error as Error
from .errors import InvalidInputError as InvalidInputError
from .errors import InvalidUrlError as InvalidUrlError
from .errors import IoError as IoError
from .errors import NotFoundError as NotFoundError
from .errors import PartialBatchError as PartialBatchError
from .errors import SerializationError as SerializationError
from .errors import TimeoutError as TimeoutError
from .errors import UnsupportedError as UnsupportedError
from .errors import ValueTooLargeError as ValueTooLargeError
from .errors import WriteError as WriteError
from .seed import WriteResult as WriteResult
from .seed import create_cache as create_cache
from .seed import run as run
from .seed import write_to_caches as write_to_caches

__version__: str
