"""LeadSync: the Azure Functions app (Python v2 programming model).

Only creates the app and registers the blueprints; everything else lives in `functions/`
(trigger adapters) and `shared/` (the sync core).
"""

import azure.functions as func

from functions.events import bp as events_bp
from functions.health import bp as health_bp
from functions.http import bp as http_bp
from functions.queues import bp as queues_bp
from functions.timers import bp as timers_bp
from shared import telemetry

telemetry.setup()
app = func.FunctionApp()
app.register_functions(timers_bp)
app.register_functions(queues_bp)
app.register_functions(http_bp)
app.register_functions(events_bp)
app.register_functions(health_bp)
