"""The Zoho adapters (issue 16): Zoho CRM REST v8 behind the store port, Zoho Desk
REST v1 to follow. Everything Zoho-specific lives here (hosts, OAuth, field names,
error codes), so other desks and CRMs can follow the same port.
"""
