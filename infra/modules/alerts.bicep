// Azure Monitor alerts on what LeadSync writes to Application Insights (workspace-based, so
// the rules query the App* tables of the Log Analytics workspace), mailed by one action group.
// Each query reads a signal the app really emits (docs/deploy.md, "Alerts"):
//   AppTraces   logger "leadsync": "... moved to <queue>-poison: <reason>" (error) and
//               "background sync paused until ..., because Marketo daily quota (607)" (warning)
//   AppMetrics  leadsync.records, one count per record outcome, dimension `kind`
//   AppRequests one row per function invocation (Functions host), Success false when it raised

param location string
param tags object
param workspaceId string
param actionGroupName string

@description('E-mail address that receives LeadSync alerts.')
@minLength(3)
param alertEmail string

@description('Record failures (validation_failed, rejected, parked) in 15 minutes that count as a spike.')
@minValue(1)
param failureSpikeThreshold int = 25

@description('Minutes without a successful poll of a side before the poll-lag alert fires.')
@allowed([10, 15, 30, 45, 60])
param pollLagLimitMinutes int = 15

@description('Failed function invocations in 15 minutes that count as the function failing.')
@minValue(1)
param functionFailureThreshold int = 5

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'leadsync'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var pollFunctions = '\'poll_marketo_changes\', \'poll_dataverse_changes\''

var rules = [
  {
    name: 'poison-messages'
    description: 'A work message was moved to a poison queue (leadsync failures / retry --poison).'
    severity: 1
    window: 'PT5M'
    query: 'AppTraces | where SeverityLevel >= 3 and Message has "-poison" and (Message has "moved to" or Message has "had no reason logged")'
    threshold: 0
  }
  {
    name: 'failure-spike'
    description: 'Many records failed validation, were refused or were parked in 15 minutes.'
    severity: 2
    window: 'PT15M'
    query: 'AppMetrics | where Name == "leadsync.records" and tostring(Properties.kind) in ("validation_failed", "rejected", "parked") | summarize Failures = sum(Sum) | where Failures >= ${failureSpikeThreshold}'
    threshold: 0
  }
  {
    name: 'poll-lag'
    description: 'A side has not been polled successfully for longer than its limit.'
    severity: 1
    window: 'PT${pollLagLimitMinutes}M'
    query: 'let expected = datatable(Name: string) [${pollFunctions}]; let ok = AppRequests | where Success == true and Name in (${pollFunctions}) | summarize LastOk = max(TimeGenerated) by Name; expected | join kind=leftouter ok on Name | where isnull(LastOk)'
    threshold: 0
  }
  {
    name: 'quota-paused'
    description: 'Marketo\'s daily API quota, or LeadSync\'s daily cap on it, is used up: the background sync is paused until the reset.'
    severity: 1
    window: 'PT15M'
    query: 'AppTraces | where Message has "background sync paused until"'
    threshold: 0
  }
  {
    name: 'function-failing'
    description: 'Function invocations are failing (the run raised; queue messages retry, then go to poison).'
    severity: 1
    window: 'PT15M'
    query: 'AppRequests | where Success == false | summarize Failed = count() by Name | where Failed >= ${functionFailureThreshold}'
    threshold: 0
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for rule in rules: {
  name: 'leadsync-${rule.name}'
  location: location
  tags: tags
  properties: {
    displayName: 'LeadSync: ${rule.name}'
    description: rule.description
    severity: rule.severity
    enabled: true
    scopes: [
      workspaceId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: rule.window
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: rule.threshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

output actionGroupId string = actionGroup.id
output alertRuleNames array = [for (rule, i) in rules: alertRules[i].name]
