"""Clients of the two services (Marketo REST, Dataverse Web API) and the Marketo call budget.

They speak the wire protocol and translate its errors into `shared.errors`; they know
nothing of links, queues or merge rules.
"""
