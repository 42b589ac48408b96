"""What LeadSync remembers, in Azure Table and Queue Storage: links, cursors, the activity
log, work queues, the quota pause and poll heartbeats.

State modules may use the rules (a link stores field values as the field map reads them),
never the clients, the sync or the operations.
"""
