"""The demo customer-service store that Mandate's tools act on: customers, orders with lines, refunds, account
changes. In a deployment these tools would call the company's own systems; the store stands in for them with real
tables in the same database as the audit trail, so an effect and its audit record commit together."""
