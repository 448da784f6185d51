"""Record the writing transaction of each change (``xid``), for the changelog reader.

The column is added without a default first, then given one: adding it with a volatile
default would rewrite the whole changelog under an exclusive lock, blocking every
captured write.  Rows from before have no xid; they were all committed by then.
"""
from django.db import migrations, models

import ddpctl.models


class Migration(migrations.Migration):

    dependencies = [
        ('ddpctl', '0002_registry'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(
                "ALTER TABLE ddpctl_change ADD COLUMN xid xid8;"
                "ALTER TABLE ddpctl_change ALTER COLUMN xid SET DEFAULT pg_current_xact_id();",
                reverse_sql="ALTER TABLE ddpctl_change DROP COLUMN xid;")],
            state_operations=[migrations.AddField(
                model_name='change',
                name='xid',
                field=ddpctl.models.TransactionIdField(
                    db_default=models.Func(function='pg_current_xact_id'),
                    help_text='the writing transaction; NULL for rows older than the column', null=True),
            )],
        ),
        migrations.AddIndex(
            model_name='change',
            index=models.Index(fields=['xid', 'id'], name='ddpctl_change_xid'),
        ),
    ]
