-- Emails never lost in silence, never stale, never repeated, and addresses kept no longer than the
-- site's privacy page promises (docs/delivery.md). Additive and idempotent.

-- A batch knows what it is about, so a retry can be re-checked against the section's current state
-- and rebuilt; how sure we are that Resend never accepted it (maybe_sent_at: an attempt whose answer
-- never came, so its key and bytes are kept); when it may be tried again (backoff); and how it ended.
alter table public.delivery_batches add column if not exists term text;
alter table public.delivery_batches add column if not exists class_nbr text;
alter table public.delivery_batches add column if not exists notification_type text;
alter table public.delivery_batches add column if not exists generation integer not null default 0;
alter table public.delivery_batches add column if not exists maybe_sent_at timestamptz;
alter table public.delivery_batches add column if not exists next_attempt_at timestamptz;
-- delivered | failed (never accepted, or every email refused) | unknown (given up, may have been
-- accepted) | cancelled (no longer true: seats filled, watchers gone). failed_at is set for all but
-- delivered: it marks a batch closed without a confirmed delivery.
alter table public.delivery_batches add column if not exists outcome text;
update public.delivery_batches set outcome = 'delivered' where outcome is null and delivered_at is not null;
update public.delivery_batches set outcome = 'failed' where outcome is null and failed_at is not null;
create index if not exists delivery_batches_created on public.delivery_batches (created_at);

-- Per email: delivered | refused (Resend refused this recipient, final) | failed | unknown | cancelled.
alter table public.notification_deliveries add column if not exists outcome text;
update public.notification_deliveries set outcome = case
        when delivered_at is not null then 'delivered'
        when cancelled_at is not null then 'cancelled'
        when last_error like 'refused by Resend%' then 'refused'
        else 'failed' end
where outcome is null and (delivered_at is not null or failed_at is not null or cancelled_at is not null);
create index if not exists notification_deliveries_created on public.notification_deliveries (created_at);

-- Whose email it was, so that deleting the account removes the address at once: the foreign key
-- sets user_id null and the trigger below drops the address and payload with it.
alter table public.notification_deliveries add column if not exists user_id uuid;
do $$
begin
    if not exists (select 1 from pg_constraint where conname = 'notification_deliveries_user_id_fkey') then
        alter table public.notification_deliveries
            add constraint notification_deliveries_user_id_fkey foreign key (user_id)
            references auth.users (id) on delete set null;
    end if;
end $$;
-- The foreign key's own lookup when an account is deleted (else a scan of the whole audit table
-- inside the site's delete).
create index if not exists notification_deliveries_user on public.notification_deliveries (user_id);
update public.notification_deliveries d set user_id = cw.user_id
from public.notifications_sent ns join public.class_watches cw on cw.id = ns.class_watch_id
where d.user_id is null and ns.id = d.notification_id;
update public.notification_deliveries d set user_id = u.id
from auth.users u
where d.user_id is null and d.recipient is not null and lower(u.email) = lower(d.recipient);
-- Rows left with an address but no user (written before this migration, no account matches): the
-- retention sweep scrubs them unless an account with that address exists.
create index if not exists notification_deliveries_unowned
    on public.notification_deliveries (id) where user_id is null and recipient is not null;

create or replace function public.seatwatch_forget_deleted_account() returns trigger
language plpgsql set search_path = '' as $$
begin
    if new.user_id is null and old.user_id is not null then
        if old.recipient is not null then
            new.last_error := replace(new.last_error, old.recipient, '<deleted account>');
        end if;
        new.recipient := null;
        new.payload := null;
    end if;
    return new;
end $$;
-- PostgreSQL grants EXECUTE on a new function to PUBLIC, and Supabase's default privileges to its
-- API roles: none of them may call it (it runs only as the table's trigger, as the owner). Revoked
-- by 0007 with every other function of this service, in the same `migrate`.

drop trigger if exists seatwatch_forget_deleted_account on public.notification_deliveries;
create trigger seatwatch_forget_deleted_account
    before update of user_id on public.notification_deliveries
    for each row execute function public.seatwatch_forget_deleted_account();

-- What an email says about its section, kept with this service's state, so a retried batch is
-- rebuilt from the section as it is now (the site's class_states row may hold another term).
alter table public.seatwatch_section_states add column if not exists subject text;
alter table public.seatwatch_section_states add column if not exists catalog_nbr text;
alter table public.seatwatch_section_states add column if not exists title text;
alter table public.seatwatch_section_states add column if not exists location text;
alter table public.seatwatch_section_states add column if not exists meeting_times text;
update public.seatwatch_section_states s
set subject = c.subject, catalog_nbr = c.catalog_nbr, title = c.title, location = c.location,
    meeting_times = c.meeting_times
from public.class_states c
where s.subject is null and c.class_nbr = s.class_nbr and c.term = s.term;
