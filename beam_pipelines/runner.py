"""The pipeline options of both Beam jobs: Beam's FnApiRunner unless the command line names one.

Beam's default, the DirectRunner, first tries its Prism runner, which it downloads from GitHub
at run time (``Downloading prism from https://github.com/apache/beam/releases/...``): online,
a local job would fetch a binary and run on an engine that ``--direct_running_mode`` and
``--direct_num_workers`` do not configure; offline the download fails and the DirectRunner
falls back to the FnApiRunner (0.1-0.4 s later, here). Both jobs run on the FnApiRunner either
way, so they ask for it: nothing comes from the network, and the local modes the README
measures are the ones that run. ``--runner DirectRunner`` still gives Beam's default
behaviour, and ``--runner DataflowRunner`` Dataflow.
"""

from __future__ import annotations

from apache_beam.options import pipeline_options as beam_options

LOCAL_RUNNER = 'FnApiRunner'


def pipeline_options(pipeline_args: list[str] | None) -> beam_options.PipelineOptions:
  """Beam's options from ``pipeline_args``, with :data:`LOCAL_RUNNER` when they name no runner."""
  options = beam_options.PipelineOptions(pipeline_args or [])
  standard = options.view_as(beam_options.StandardOptions)
  if standard.runner is None:
    standard.runner = LOCAL_RUNNER
  return options
