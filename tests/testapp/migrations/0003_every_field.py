"""The every-field model.  Its hstore column needs the hstore extension, which some servers
(the embedded PostgreSQL among them) lack: there the column is plain text and the hstore
tests skip."""
import logging

import django.contrib.postgres.fields
import django.contrib.postgres.fields.hstore
import django.contrib.postgres.fields.ranges
import django.db.models.deletion
import django.db.models.expressions
from django.contrib.postgres.operations import HStoreExtension
from django.db import migrations, models

import testapp.models

logger = logging.getLogger(__name__)


def _hstore_available(schema_editor) -> bool:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'hstore'")
        return cursor.fetchone() is not None


class HStoreExtensionIfAvailable(HStoreExtension):
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if _hstore_available(schema_editor):
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            logger.warning("PostgreSQL has no hstore extension: testapp_everything.tags will be text")


class AddHStoreField(migrations.AddField):
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if _hstore_available(schema_editor):
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            schema_editor.execute('ALTER TABLE "testapp_everything" ADD COLUMN "tags" text NULL')


class Migration(migrations.Migration):

    dependencies = [
        ('testapp', '0002_tenant_note'),
    ]

    operations = [
        HStoreExtensionIfAvailable(),
        migrations.CreateModel(
            name='Everything',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('big', models.BigIntegerField(null=True)),
                ('small', models.SmallIntegerField(null=True)),
                ('integer', models.IntegerField(null=True)),
                ('positive', models.PositiveIntegerField(null=True)),
                ('positive_big', models.PositiveBigIntegerField(null=True)),
                ('positive_small', models.PositiveSmallIntegerField(null=True)),
                ('flag', models.BooleanField(null=True)),
                ('char', models.CharField(max_length=100, null=True)),
                ('text', models.TextField(null=True)),
                ('slug', models.SlugField(null=True)),
                ('email', models.EmailField(max_length=254, null=True)),
                ('url', models.URLField(null=True)),
                ('kind', models.CharField(choices=[('paper', 'Paper'), ('ebook', 'E-book')], max_length=10, null=True)),
                ('level', models.IntegerField(choices=[(1, 'Low'), (2, 'High')], null=True)),
                ('real', models.FloatField(null=True)),
                ('amount', models.DecimalField(decimal_places=10, max_digits=30, null=True)),
                ('day', models.DateField(null=True)),
                ('moment', models.DateTimeField(null=True)),
                ('clock', models.TimeField(null=True)),
                ('span', models.DurationField(null=True)),
                ('blob', models.BinaryField(null=True)),
                ('uid', models.UUIDField(null=True)),
                ('ip', models.GenericIPAddressField(null=True)),
                ('file', models.FileField(null=True, upload_to='')),
                ('path', models.FilePathField(null=True, path='/tmp')),
                ('data', models.JSONField(decoder=testapp.models.DataDecoder, null=True)),
                ('doubled', models.GeneratedField(db_persist=True, expression=django.db.models.expressions.CombinedExpression(models.F('integer'), '*', models.Value(2)), output_field=models.BigIntegerField())),
                ('prices', django.contrib.postgres.fields.ArrayField(base_field=models.DecimalField(decimal_places=2, max_digits=12), null=True, size=None)),
                ('moments', django.contrib.postgres.fields.ArrayField(base_field=models.DateTimeField(), null=True, size=None)),
                ('uids', django.contrib.postgres.fields.ArrayField(base_field=models.UUIDField(), null=True, size=None)),
                ('grid', django.contrib.postgres.fields.ArrayField(base_field=django.contrib.postgres.fields.ArrayField(base_field=models.IntegerField(), size=None), null=True, size=None)),
                ('reals', django.contrib.postgres.fields.ArrayField(base_field=models.FloatField(null=True), null=True, size=None)),
                ('ips', django.contrib.postgres.fields.ArrayField(base_field=models.GenericIPAddressField(), null=True, size=None)),
                ('spans', django.contrib.postgres.fields.ArrayField(base_field=models.DurationField(), null=True, size=None)),
                ('int_range', django.contrib.postgres.fields.ranges.IntegerRangeField(null=True)),
                ('big_range', django.contrib.postgres.fields.ranges.BigIntegerRangeField(null=True)),
                ('decimal_range', django.contrib.postgres.fields.ranges.DecimalRangeField(null=True)),
                ('moment_range', django.contrib.postgres.fields.ranges.DateTimeRangeField(null=True)),
                ('day_range', django.contrib.postgres.fields.ranges.DateRangeField(null=True)),
                ('parent', models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, to='testapp.everything')),
            ],
        ),
        AddHStoreField(
            model_name='everything',
            name='tags',
            field=django.contrib.postgres.fields.hstore.HStoreField(null=True),
        ),
    ]
