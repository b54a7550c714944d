"""Mail: the emails built from templates (build), sent through Resend (mailer) or written to a folder
(outbox), delivered in batches that survive crashes (delivery, recheck), kept no longer than promised
(retention); the unsubscribe link and the operator's preview."""
