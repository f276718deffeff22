"""The errors users see. Each names the object at fault and how to fix it."""


class FeatureStoreError(Exception):
    """Base class: anything the user can fix. The CLI prints it and exits with status 1."""


class DefinitionError(FeatureStoreError):
    """A definition in the feature repo is malformed or inconsistent."""


class CompileError(DefinitionError):
    """A transform could not be compiled into a Numba kernel."""


class SourceDataError(FeatureStoreError):
    """A source's data file or table does not match its definition."""


class LabelsError(FeatureStoreError):
    """The labels handed to training_set are unusable."""


class NotAppliedError(FeatureStoreError):
    """The registry does not hold what was asked for: `featurestore apply` first."""


class UnknownNameError(FeatureStoreError):
    """A feature, view or service name that the plan does not define."""


class ReadOnlyError(FeatureStoreError):
    """SQL that tried to modify the offline store through the read-only SQL surface."""



class OfflineStoreBusy(FeatureStoreError):
    """Another process holds the offline store's file (DuckDB takes one writer process)."""


class OnlineUnavailable(FeatureStoreError):
    """The online store could not be reached, or did not answer in time; retrying may work."""


class OnlineTimeout(OnlineUnavailable):
    """Redis did not answer within the time given."""


class DeadlineExceeded(FeatureStoreError):
    """The caller's deadline passed before the work's point of no return: nothing was kept."""


class OnlineDataLost(OnlineUnavailable):
    """Redis answers but no longer holds the registry the read was prepared from: it lost its
    data (restarted without persistence, flushed, replaced). Never served as values."""


class PastReadRefused(FeatureStoreError):
    """The online store cannot answer this as_of exactly (it holds newer state, or no longer
    holds what the answer needs); the message names the view and the earliest answerable
    time. Older values come from a training set."""


class RegistryMoved(FeatureStoreError):
    """A view's served storage changed since the read was prepared (a materialization
    flipped it): prepare the read again."""


class OnlineStoreError(FeatureStoreError):
    """The online store answered with an error: a bug or a misconfiguration, not an outage."""
