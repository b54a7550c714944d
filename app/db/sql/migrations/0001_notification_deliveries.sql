-- Exactly-once delivery: a claimed notification gets a delivery row holding the exact email
-- payload and the batch it goes in, so a resend (the sweep) reproduces the same Resend request
-- under the same Idempotency-Key. Deleting the notification (seats filled again) cancels it.
create table if not exists public.notification_deliveries (
    notification_id uuid primary key
        references public.notifications_sent (id) on delete cascade,
    batch_key text not null,
    position integer not null,
    payload jsonb not null,
    created_at timestamptz not null default now(),
    attempts integer not null default 0,
    last_error text,
    delivered_at timestamptz,
    resend_id text,
    failed_at timestamptz
);

create index if not exists notification_deliveries_undelivered
    on public.notification_deliveries (batch_key, position)
    where delivered_at is null and failed_at is null;
