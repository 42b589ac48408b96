// LeadSync on Azure: a Python 3.11 Function App on the Flex Consumption plan, its storage
// (identity-only), a Key Vault for the Marketo and Dataverse secrets, and Application
// Insights on a Log Analytics workspace. Deploy with `azd up`, or with
// `az deployment group create --template-file infra/main.bicep` (docs/deploy.md).
targetScope = 'resourceGroup'

@description('Name of the azd environment; names and tags every resource.')
@minLength(1)
@maxLength(64)
param environmentName string

@description('Azure region for every resource (one that offers the Flex Consumption plan).')
@minLength(1)
param location string

// --- Marketo -------------------------------------------------------------------------

@description('Marketo REST base URL, https://<munchkin-id>.mktorest.com.')
@minLength(1)
param marketoBaseUrl string

@description('Client id of the LaunchPoint custom service of the API-only user.')
@minLength(1)
param marketoClientId string

@description('Client secret of that LaunchPoint service; stored in Key Vault only.')
@secure()
@minLength(1)
param marketoClientSecret string

// Flex Consumption runs each timer and queue function, and the HTTP functions together,
// on instances of their own ("per-function scaling"), and scales each out. Every instance
// and worker process draws on ONE budget kept in the state storage account (README,
// "Scaling out"), so these are shares of the services' own limits, not per-instance caps.
@description('Percent of Marketo\'s limits (100 calls / 20 s, 10 in flight) LeadSync may use, all instances together.')
@minValue(1)
@maxValue(100)
param marketoSharePercent int = 90

@description('Percent of Dataverse\'s service-protection limits (6,000 requests / 5 min, 52 in flight) LeadSync may use.')
@minValue(1)
@maxValue(100)
param dataverseSharePercent int = 90

@description('When to read Marketo\'s lead changes: six-field NCRONTAB or hh:mm:ss.')
param marketoPollSchedule string = '*/30 * * * * *'

@description('Boolean Marketo field set when Dynamics deletes the linked record.')
param marketoDeletedField string = 'msftIsDeleted'

@description('apiName of the custom activity LeadSync writes to Marketo Activity Logs.')
param marketoActivityType string = 'leadsyncEvent'

@description('The Marketo subscription\'s daily API quota (Admin > Web Services); subscriptions differ.')
@minValue(1)
param marketoDailyQuota int = 50000

@description('LeadSync\'s share of that quota in percent, counted with every integration\'s calls.')
@minValue(1)
@maxValue(100)
param dailyCapPercent int = 80

// --- Dataverse -----------------------------------------------------------------------

@description('Dataverse environment URL, https://<org>.crm.dynamics.com.')
@minLength(1)
param dataverseUrl string

@description('Entra tenant id of the app registration bound to the Dataverse application user.')
@minLength(1)
param dataverseTenantId string

@description('Client (application) id of that app registration.')
@minLength(1)
param dataverseClientId string

@description('Client secret of that app registration; stored in Key Vault only.')
@secure()
@minLength(1)
param dataverseClientSecret string

@description('Entra authority host.')
param dataverseAuthorityHost string = 'https://login.microsoftonline.com'

@description('When to read Dataverse change tracking: six-field NCRONTAB or hh:mm:ss.')
param dataversePollSchedule string = '*/30 * * * * *'

@description('Two-option column on lead and contact; only an explicit No keeps a record out of Marketo.')
param dataverseSyncFilterField string = 'new_synctomkto'

// --- LeadSync and hosting ------------------------------------------------------------

@description('Shared secret the Marketo webhook sends in the x-leadsync-secret header (e.g. `openssl rand -hex 32`); stored in Key Vault only.')
@secure()
@minLength(16)
param webhookSecret string

@description('Field map as JSON (or a path inside the package); empty uses shared/rules/fieldmap_default.json.')
param fieldMap string = ''

@description('Prefix of LeadSync\'s state tables.')
param tablePrefix string = 'leadsync'

@description('Most instances per scale group. The shared budget keeps any number inside the services\' limits.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of one Flex Consumption instance.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

// --- Alerts --------------------------------------------------------------------------

@description('E-mail address that receives LeadSync\'s Azure Monitor alerts (docs/deploy.md, "Alerts").')
@minLength(3)
param alertEmail string

@description('Minutes without a successful poll of a side before the poll-lag alert fires (over 3 x the poll schedule).')
@allowed([10, 15, 30, 45, 60])
param pollLagLimitMinutes int = 15

@description('Replication of the state storage account.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_RAGRS'
])
param storageSkuName string = 'Standard_LRS'

var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var tags = {
  'azd-env-name': environmentName
  application: 'leadsync'
}
var deploymentContainerName = 'app-package-${resourceToken}'

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    tags: tags
    workspaceName: 'log-${resourceToken}'
    appInsightsName: 'appi-${resourceToken}'
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    location: location
    tags: tags
    workspaceId: monitoring.outputs.workspaceId
    actionGroupName: 'ag-${resourceToken}'
    alertEmail: alertEmail
    pollLagLimitMinutes: pollLagLimitMinutes
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    tags: tags
    name: 'st${resourceToken}'
    deploymentContainerName: deploymentContainerName
    skuName: storageSkuName
  }
}

module vault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    location: location
    tags: tags
    name: 'kv-${resourceToken}'
    marketoClientSecret: marketoClientSecret
    dataverseClientSecret: dataverseClientSecret
    webhookSecret: webhookSecret
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    location: location
    tags: tags
    planName: 'plan-${resourceToken}'
    appName: 'func-leadsync-${resourceToken}'
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: deploymentContainerName
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
}

module access 'modules/access.bicep' = {
  name: 'access'
  params: {
    principalId: functionApp.outputs.principalId
    storageAccountName: storage.outputs.name
    keyVaultName: vault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
  }
}

// After `access`: the first start then resolves the Key Vault references and reaches storage.
module appSettings 'modules/appsettings.bicep' = {
  name: 'appsettings'
  dependsOn: [
    access
  ]
  params: {
    appName: functionApp.outputs.name
    storageAccountName: storage.outputs.name
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageQueueEndpoint: storage.outputs.queueEndpoint
    storageTableEndpoint: storage.outputs.tableEndpoint
    appInsightsConnectionString: monitoring.outputs.connectionString
    marketoClientSecretUri: vault.outputs.marketoClientSecretUri
    dataverseClientSecretUri: vault.outputs.dataverseClientSecretUri
    webhookSecretUri: vault.outputs.webhookSecretUri
    marketoBaseUrl: marketoBaseUrl
    marketoClientId: marketoClientId
    marketoSharePercent: marketoSharePercent
    dataverseSharePercent: dataverseSharePercent
    marketoPollSchedule: marketoPollSchedule
    marketoDeletedField: marketoDeletedField
    marketoActivityType: marketoActivityType
    marketoDailyQuota: marketoDailyQuota
    dailyCapPercent: dailyCapPercent
    dataverseUrl: dataverseUrl
    dataverseTenantId: dataverseTenantId
    dataverseClientId: dataverseClientId
    dataverseAuthorityHost: dataverseAuthorityHost
    dataversePollSchedule: dataversePollSchedule
    dataverseSyncFilterField: dataverseSyncFilterField
    fieldMap: fieldMap
    tablePrefix: tablePrefix
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = subscription().tenantId
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_KEY_VAULT_NAME string = vault.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output SYNC_PERSON_URL string = 'https://${functionApp.outputs.defaultHostName}/api/sync-person'
