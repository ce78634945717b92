"""The cloud-neutral runtime: event types, settings, alarm classification and the wiring that
builds the core once per process, so each cloud's handler only converts its trigger and calls
:class:`~skyscore.runtime.core.Core`."""
