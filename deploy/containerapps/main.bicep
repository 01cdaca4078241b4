// The Container App of app.yaml in Bicep: the app, secretbridge and its own daprd
// sharing an EmptyDir socket volume, a user-assigned identity with the
// Key Vault Secrets User role on the vault. The socket is mode 0660, group 65532:
// secretbridge's image runs as 10001:65532, daprd's as 65532:65532 (Container Apps
// has no fsGroup). Start order and who may connect: app.yaml's header, docs/deployment.md.
param location string = resourceGroup().location
param environmentId string
param vaultName string
param appImage string
param secretbridgeImage string
param daprdImage string = 'daprio/daprd:1.18.2'
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
          args: [ '--name', 'secretbridge', '--socket-group', '65532' ]
          env: [ { name: 'AZURE_CLIENT_ID', value: identity.properties.clientId } ]
          volumeMounts: [
            { volumeName: 'dapr-sockets', mountPath: '/tmp/dapr-components-sockets' }
            { volumeName: 'app-secrets', mountPath: '/mnt/secrets' }
          ]
          probes: [
            // Readiness: can the backends serve? Liveness: does the process answer (never the vault),
            // with two minutes' grace.
            { type: 'Readiness', httpGet: { path: '/readyz', port: 8081 }, periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 3 }
            { type: 'Liveness', httpGet: { path: '/healthz', port: 8081 }, periodSeconds: 20, timeoutSeconds: 5, failureThreshold: 6 }
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
