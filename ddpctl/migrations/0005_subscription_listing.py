"""A view of ``ddpctl_subscription`` with a one-column key, for Django's admin (which cannot
list a model with a composite primary key)."""
import django.contrib.postgres.fields
from django.db import migrations, models

VIEW = """
CREATE VIEW ddpctl_subscription_listing AS
SELECT connection || ' ' || sub_id AS id, connection, sub_id, node, publication, params, documents,
       collections, started_at, refresh
FROM ddpctl_subscription
"""


class Migration(migrations.Migration):

    dependencies = [
        ('ddpctl', '0004_subscription_refresh'),
    ]

    operations = [
        migrations.RunSQL(VIEW, "DROP VIEW IF EXISTS ddpctl_subscription_listing"),
        migrations.CreateModel(
            name='LiveSubscriptionListing',
            fields=[
                ('id', models.TextField(primary_key=True, serialize=False)),
                ('connection', models.CharField(max_length=64)),
                ('sub_id', models.TextField()),
                ('node', models.CharField(max_length=32)),
                ('publication', models.TextField()),
                ('params', models.TextField(help_text='EJSON, secrets redacted')),
                ('documents', models.IntegerField()),
                ('collections', django.contrib.postgres.fields.ArrayField(
                    base_field=models.TextField(), default=list, size=None)),
                ('started_at', models.DateTimeField()),
                ('refresh', models.TextField(help_text='how its observer refreshes: multiplexed, alone: why')),
            ],
            options={
                'verbose_name': 'live subscription',
                'db_table': 'ddpctl_subscription_listing',
                'managed': False,
            },
        ),
        migrations.AlterModelOptions(
            name='liveconnection',
            options={'verbose_name': 'live connection'},
        ),
    ]
