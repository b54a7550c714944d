-- A claim that works again once the previous notification expired or was cleared. The running
-- try_record_notification returned false forever after the first row (plain unique constraint).
-- The constraint stays (the site may rely on it): an expired row is removed before the insert.
create or replace function public.claim_notification(
    p_class_watch_id uuid, p_notification_type text, p_expires_hours integer default 24)
returns uuid
language plpgsql as $$
declare
    v_id uuid;
begin
    delete from public.notifications_sent
    where class_watch_id = p_class_watch_id
      and notification_type = p_notification_type
      and expires_at <= now();
    insert into public.notifications_sent (class_watch_id, notification_type, sent_at, expires_at)
    values (p_class_watch_id, p_notification_type, now(), now() + make_interval(hours => p_expires_hours))
    on conflict do nothing
    returning id into v_id;
    return v_id;
end $$;

create or replace function public.try_record_notification(
    p_class_watch_id uuid, p_notification_type text, p_expires_hours integer default 24)
returns boolean
language sql as $$
    select public.claim_notification(p_class_watch_id, p_notification_type, p_expires_hours) is not null
$$;
