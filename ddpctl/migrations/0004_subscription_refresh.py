"""Record how each subscription's observer refreshes (``ddpctl subs ls``)."""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('ddpctl', '0003_change_xid'),
    ]

    operations = [
        migrations.AddField(
            model_name='livesubscription',
            name='refresh',
            field=models.TextField(db_default='', help_text='how its observer refreshes: multiplexed, alone: why'),
        ),
    ]
