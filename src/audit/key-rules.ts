// Verdicts on the keys of tenant tables: the tenant column's type and nullability, its foreign
// key to the tenants table, foreign keys and unique keys that keep to one tenant, and an index
// the policies can use. Constraint checks run without RLS, which is why each of these matters.
import type { AuditFacts, TenantTableFacts } from './facts.js'
import { finding, type AuditFinding } from './rules.js'

const ON_DELETE: Readonly<Record<string, string>> = { a: 'NO ACTION', r: 'RESTRICT', c: 'CASCADE', n: 'SET NULL', d: 'SET DEFAULT' }

function columnFindings (table: TenantTableFacts, column: string, expectedType: string): AuditFinding[] {
  const findings: AuditFinding[] = []
  if (table.columnType !== expectedType) {
    findings.push(finding('keys.tenant-column-type', table.name, `${column} is ${table.columnType}, not ${expectedType}`,
      `ALTER TABLE ${table.name} ALTER COLUMN ${column} TYPE ${expectedType} USING ${column}::${expectedType};`))
  }
  if (!table.notNull) {
    findings.push(finding('keys.tenant-column-nullable', table.name, `${column} accepts NULL`,
      `ALTER TABLE ${table.name} ALTER COLUMN ${column} SET NOT NULL; (after assigning or deleting the rows without a tenant)`))
  }
  return findings
}

function foreignKeyFindings (table: TenantTableFacts, column: string, tenants: string): AuditFinding[] {
  const findings: AuditFinding[] = []
  const toTenants = table.foreignKeys.filter((key) => !key.parentIsTenantTable && key.columns.length === 1 && key.columns[0] === column)
  if (toTenants.length === 0) {
    findings.push(finding('keys.no-tenants-fk', table.name, `${column} references no tenants table`,
      `ALTER TABLE ${table.name} ADD FOREIGN KEY (${column}) REFERENCES ${tenants} ON DELETE CASCADE;`))
  }
  for (const key of toTenants.filter(({ onDelete }) => onDelete !== 'c')) {
    findings.push(finding('keys.tenants-fk-no-cascade', `constraint ${key.name} on ${table.name}`, `the foreign key to ${key.parent} is ON DELETE ${ON_DELETE[key.onDelete] ?? key.onDelete}`,
      `ALTER TABLE ${table.name} DROP CONSTRAINT ${key.name}, ADD CONSTRAINT ${key.name} FOREIGN KEY (${column}) REFERENCES ${key.parent} (${key.parentColumns.join(', ')}) ON DELETE CASCADE;`))
  }
  for (const key of table.foreignKeys.filter(({ parentIsTenantTable }) => parentIsTenantTable)) {
    const index = key.columns.indexOf(column)
    if (index === -1 || key.parentColumns[index] !== column) {
      findings.push(finding('keys.fk-without-tenant', `constraint ${key.name} on ${table.name}`,
        `the foreign key (${key.columns.join(', ')}) to the tenant table ${key.parent} does not pair ${column} with ${column}`,
        `ALTER TABLE ${table.name} DROP CONSTRAINT ${key.name}, ADD CONSTRAINT ${key.name} FOREIGN KEY (${[column, ...key.columns.filter((name) => name !== column)].join(', ')}) REFERENCES ${key.parent} (${[column, ...key.parentColumns.filter((name) => name !== column)].join(', ')}); (${key.parent} needs a unique key on the same columns)`))
    }
  }
  return findings
}

function indexFindings (table: TenantTableFacts, column: string): AuditFinding[] {
  const findings: AuditFinding[] = table.uniqueIndexes.filter((index) => !index.includesTenant).map((index) =>
    finding('keys.unique-without-tenant', `${index.primary ? 'primary key' : index.isConstraint ? 'unique constraint' : 'unique index'} ${index.name} on ${table.name}`,
      `the ${index.primary ? 'primary key' : 'unique key'} ${index.name} does not include ${column}`,
      index.isConstraint
        ? `ALTER TABLE ${table.name} DROP CONSTRAINT ${index.name}, ADD CONSTRAINT ${index.name} ${index.primary ? 'PRIMARY KEY' : 'UNIQUE'} (${column}, <its columns>);`
        : `DROP INDEX ${index.name}; CREATE UNIQUE INDEX ON ${table.name} (${column}, <its columns>);`))
  if (!table.tenantLeadingIndex) {
    findings.push(finding('keys.no-tenant-index', table.name, `no index starts with ${column}`, `CREATE INDEX ON ${table.name} (${column});`))
  }
  return findings
}

/** Findings of the `keys.*` rules. `tenants` names the tenants table in the fixes only. */
export function keyFindings (facts: AuditFacts, column: string, expectedType: string, tenants = 'tenants (id)'): AuditFinding[] {
  return facts.tables.flatMap((table) => [
    ...columnFindings(table, column, expectedType),
    ...foreignKeyFindings(table, column, tenants),
    ...indexFindings(table, column)
  ])
}
