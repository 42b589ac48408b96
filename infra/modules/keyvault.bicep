// Key Vault (RBAC mode) holding the Marketo and Dataverse client secrets and the webhook's
// shared secret. The app reads
// them through Key Vault references in its app settings, as its managed identity with
// the Key Vault Secrets User role (access.bicep); nobody gets access policies.

param location string
param tags object
param name string

@description('Marketo LaunchPoint client secret.')
@secure()
param marketoClientSecret string

@description('Client secret of the Entra app registration bound to the Dataverse application user.')
@secure()
param dataverseClientSecret string

@description('Shared secret Marketo\'s webhook sends in the x-leadsync-secret header.')
@secure()
param webhookSecret string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource marketoSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'marketo-client-secret'
  properties: {
    value: marketoClientSecret
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}

resource dataverseSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'dataverse-client-secret'
  properties: {
    value: dataverseClientSecret
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}

resource webhookSecretValue 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'leadsync-webhook-secret'
  properties: {
    value: webhookSecret
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}

output name string = vault.name
// Versionless URIs: a Key Vault reference to one follows a rotated secret (within 24 h,
// or at once on an app restart).
output marketoClientSecretUri string = marketoSecret.properties.secretUri
output dataverseClientSecretUri string = dataverseSecret.properties.secretUri
output webhookSecretUri string = webhookSecretValue.properties.secretUri
