"""Local development host for LeadSync: runs `function_app.app` with the Azure Functions
host's semantics, plus emulators of Marketo and Dataverse. Never deployed; the product
never imports this package."""
