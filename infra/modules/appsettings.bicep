// Every app setting of the Function App, in one place (this resource replaces the whole
// set on each deployment). Storage is reached as the app's managed identity: no account
// key or connection string appears here. Secrets appear only as Key Vault references.
// Names and meanings: README.md, "Configuration".

param appName string
param storageAccountName string
param storageBlobEndpoint string
param storageQueueEndpoint string
param storageTableEndpoint string
param appInsightsConnectionString string

@description('Versionless URI of the Key Vault secret holding the Marketo client secret.')
param marketoClientSecretUri string

@description('Versionless URI of the Key Vault secret holding the Dataverse client secret.')
param dataverseClientSecretUri string

@description('Versionless URI of the Key Vault secret holding the webhook\'s shared secret.')
param webhookSecretUri string

param marketoBaseUrl string
param marketoClientId string
param marketoSharePercent int
param dataverseSharePercent int
param marketoPollSchedule string
param marketoDeletedField string
param marketoActivityType string
param marketoDailyQuota int
param dailyCapPercent int
param dataverseUrl string
param dataverseTenantId string
param dataverseClientId string
param dataverseAuthorityHost string
param dataversePollSchedule string
param dataverseSyncFilterField string
param fieldMap string
param tablePrefix string

resource app 'Microsoft.Web/sites@2024-04-01' existing = {
  name: appName
}

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: app
  name: 'appsettings'
  properties: {
    // Identity-based connection: the host and LeadSync's own clients use the account
    // name / service URIs with the system-assigned identity (roles in access.bicep).
    AzureWebJobsStorage__accountName: storageAccountName
    AzureWebJobsStorage__blobServiceUri: storageBlobEndpoint
    AzureWebJobsStorage__queueServiceUri: storageQueueEndpoint
    AzureWebJobsStorage__tableServiceUri: storageTableEndpoint
    APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
    // Telemetry is sent with the managed identity; the component refuses the bare key.
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
    MARKETO_BASE_URL: marketoBaseUrl
    MARKETO_CLIENT_ID: marketoClientId
    MARKETO_CLIENT_SECRET: '@Microsoft.KeyVault(SecretUri=${marketoClientSecretUri})'
    LEADSYNC_MARKETO_SHARE_PCT: string(marketoSharePercent)
    LEADSYNC_DATAVERSE_SHARE_PCT: string(dataverseSharePercent)
    MARKETO_POLL_SCHEDULE: marketoPollSchedule
    MARKETO_DELETES_EVERY_S: '300'
    MARKETO_QUOTA_RECHECK_S: '300'
    MARKETO_DAILY_QUOTA: string(marketoDailyQuota)
    LEADSYNC_DAILY_CAP_PCT: string(dailyCapPercent)
    LEADSYNC_REALTIME_RESERVE_PCT: '5'
    LEADSYNC_CAP_CHECK_S: '300'
    LEADSYNC_BACKGROUND_PAUSED: 'false'
    LEADSYNC_REALTIME_FINISH_AFTER_S: '150'
    LEADSYNC_EVENTS_COALESCE_S: '1'
    LEADSYNC_EVENTS_MAX_WINDOW_S: '30'
    LEADSYNC_TRENDS_EVERY_S: '600'
    // Owners, closed leads, partitions: blank means Dataverse's and Marketo's own defaults (README, "Owners").
    LEADSYNC_LEAD_OWNER: ''
    LEADSYNC_LEAD_OWNER_FIELD: ''
    LEADSYNC_OWNER_EMAIL_FIELD: ''
    LEADSYNC_CLOSED_LEAD_ACTION: 'keep'
    MARKETO_PARTITION: ''
    DATAVERSE_DUPLICATE_DETECTION: 'true'
    MARKETO_DELETED_FIELD: marketoDeletedField
    MARKETO_ACTIVITY_TYPE: marketoActivityType
    DATAVERSE_URL: dataverseUrl
    DATAVERSE_TENANT_ID: dataverseTenantId
    DATAVERSE_CLIENT_ID: dataverseClientId
    DATAVERSE_CLIENT_SECRET: '@Microsoft.KeyVault(SecretUri=${dataverseClientSecretUri})'
    DATAVERSE_AUTHORITY_HOST: dataverseAuthorityHost
    DATAVERSE_POLL_SCHEDULE: dataversePollSchedule
    DATAVERSE_SYNC_FILTER_FIELD: dataverseSyncFilterField
    LEADSYNC_FIELD_MAP: fieldMap
    LEADSYNC_TABLE_PREFIX: tablePrefix
    LEADSYNC_WEBHOOK_SECRET: '@Microsoft.KeyVault(SecretUri=${webhookSecretUri})'
  }
}
