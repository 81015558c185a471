"""Mail that Mandate sends on a tool's behalf (account email confirmation codes, notices to the old address).

The configuration picks the sender (``[mail]``, docs/configuration.md): SMTP (RFC 5321, STARTTLS per RFC 3207,
AUTH from a password kept in an environment variable), a development outbox directory, or none. No sender ever
writes a message body to a log: a body may hold a confirmation code.
"""

from server.mail.senders import MailSender, MailUnavailable, OutgoingMail, build_sender

__all__ = ["MailSender", "MailUnavailable", "OutgoingMail", "build_sender"]
