-- One row per Resend batch: the unit that is leased, sent and marked delivered.
--
-- * A lease (lease_owner, lease_until) is taken and committed before the HTTP call and dropped
--   after it: no transaction, row lock or pooler connection is held while Resend answers, and two
--   senders (a check and the sweep) can never split a batch, because the lease is one row.
-- * On the first attempt the batch's payload is frozen (payload, notification_ids): every later
--   attempt sends exactly those bytes under the same Idempotency-Key, even if a watch was deleted in
--   between, so Resend replays its answer instead of answering 409 invalid_idempotent_request.
-- * last_status/last_error say why a batch is still waiting (401/403 show in health).
create table if not exists public.delivery_batches (
    batch_key text primary key,
    created_at timestamptz not null default now(),
    lease_owner text,
    lease_until timestamptz,
    attempts integer not null default 0,
    first_attempt_at timestamptz,
    last_attempt_at timestamptz,
    last_status integer,
    last_error text,
    payload jsonb,
    delivery_ids uuid[],
    delivered_at timestamptz,
    failed_at timestamptz
);

create index if not exists delivery_batches_open
    on public.delivery_batches (created_at)
    where delivered_at is null and failed_at is null;

-- Batches created before this migration (by 0001's flow) become batch rows too.
insert into public.delivery_batches (batch_key, created_at)
select batch_key, min(created_at) from public.notification_deliveries
where delivered_at is null and failed_at is null
group by batch_key
on conflict do nothing;

-- Each delivery row becomes an audit row that outlives its claim: who (recipient), what
-- (notification_type), when, and Resend's id. When the claim goes (seats filled again, a watch
-- deleted) the row stays with notification_id null; one not yet attempted is then cancelled.
-- Payloads are kept only while they can be resent (Resend keeps a key 24 h).
alter table public.notification_deliveries add column if not exists id uuid not null default gen_random_uuid();
alter table public.notification_deliveries drop constraint if exists notification_deliveries_pkey;
alter table public.notification_deliveries add primary key (id);
alter table public.notification_deliveries alter column notification_id drop not null;
alter table public.notification_deliveries
    drop constraint if exists notification_deliveries_notification_id_fkey;
alter table public.notification_deliveries
    add constraint notification_deliveries_notification_id_fkey foreign key (notification_id)
    references public.notifications_sent (id) on delete set null;
create unique index if not exists notification_deliveries_notification
    on public.notification_deliveries (notification_id) where notification_id is not null;
alter table public.notification_deliveries alter column payload drop not null;
alter table public.notification_deliveries add column if not exists recipient text;
alter table public.notification_deliveries add column if not exists notification_type text;
alter table public.notification_deliveries add column if not exists cancelled_at timestamptz;
update public.notification_deliveries d set recipient = d.payload -> 'to' ->> 0,
    notification_type = ns.notification_type
from public.notifications_sent ns
where ns.id = d.notification_id and d.recipient is null;

-- What health counts and what the pruning sweep looks for, without scanning the table.
create index if not exists notification_deliveries_failed
    on public.notification_deliveries (failed_at) where failed_at is not null;
create index if not exists notification_deliveries_with_payload
    on public.notification_deliveries (created_at) where payload is not null;
create index if not exists notification_deliveries_batch
    on public.notification_deliveries (batch_key, position);
