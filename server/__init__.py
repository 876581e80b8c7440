"""musicprod server: serves an experiment's champion (base model + LoRA adapter) over HTTP.

`create_app(engine, settings, blueprints=[...])` builds the Flask app; `server.main.serve` runs it under waitress.
"""

from server.app import ServeSettings, create_app
from server.engine import Engine, SamplingParams

__all__ = ["Engine", "SamplingParams", "ServeSettings", "create_app"]
