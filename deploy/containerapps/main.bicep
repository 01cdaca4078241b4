// The Container App of app.yaml in Bicep: the app, secretbridge and its own daprd
// sharing an EmptyDir socket volume, a user-assigned identity with the
// Key Vault Secrets User role on the vault.
param location string = resourceGroup().location
param environmentId string
param vaultName string
param appImage string
param secretbridgeImage string
param daprdImage string = 'daprio/daprd:1.16.0'
@description('Azure Files storage (on the environment) holding the Component YAMLs daprd loads')
param componentsStorageName string = 'dapr-components'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-orders'
  location: location
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

// Key Vault Secrets User: read secret values, nothing else.
var secretsUserRole = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')

resource canReadSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identity.id, secretsUserRole)
  scope: vault
  properties: {
    roleDefinitionId: secretsUserRole
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource app 'Microsoft.App/containerApps@2024-03-01' = {
  name: 'orders'
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identity.id}': {} }
  }
  properties: {
    managedEnvironmentId: environmentId
    configuration: {
      activeRevisionsMode: 'Single'
      secrets: [
        {
          name: 'db-password'
          keyVaultUrl: '${vault.properties.vaultUri}secrets/db-password'
          identity: identity.id
        }
      ]
    }
    template: {
      containers: [
        {
          name: 'orders'
          image: appImage
          env: [
            { name: 'DAPR_HTTP_PORT', value: '3500' }
            { name: 'DAPR_GRPC_PORT', value: '50001' }
          ]
        }
        {
          name: 'secretbridge'
          image: secretbridgeImage
          env: [ { name: 'AZURE_CLIENT_ID', value: identity.properties.clientId } ]
          volumeMounts: [
            { volumeName: 'dapr-sockets', mountPath: '/tmp/dapr-components-sockets' }
            { volumeName: 'app-secrets', mountPath: '/mnt/secrets' }
          ]
          probes: [
            { type: 'Readiness', httpGet: { path: '/readyz', port: 8081 } }
            { type: 'Liveness', httpGet: { path: '/healthz', port: 8081 } }
          ]
        }
        {
          name: 'daprd'
          image: daprdImage
          command: [ '/daprd' ]
          args: [ '--app-id', 'orders', '--app-port', '8080', '--resources-path', '/components', '--log-as-json' ]
          volumeMounts: [
            { volumeName: 'dapr-sockets', mountPath: '/tmp/dapr-components-sockets' }
            { volumeName: 'dapr-components', mountPath: '/components' }
          ]
        }
      ]
      volumes: [
        { name: 'dapr-sockets', storageType: 'EmptyDir' }
        { name: 'app-secrets', storageType: 'Secret' }
        { name: 'dapr-components', storageType: 'AzureFile', storageName: componentsStorageName }
      ]
    }
  }
  dependsOn: [ canReadSecrets ]
}
