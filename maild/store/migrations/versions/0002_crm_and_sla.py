"""crm and sla

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 19:59:36.142805
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('contact_notes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('contact_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('author', sa.String(length=320), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_contact_notes_contact_id_contacts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contact_notes'))
    )
    with op.batch_alter_table('contact_notes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_contact_notes_contact_id'), ['contact_id'], unique=False)

    op.create_table('contact_tags',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('contact_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tag', sa.String(length=128), nullable=False),
    sa.Column('color', sa.String(length=32), nullable=True),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_contact_tags_contact_id_contacts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contact_tags')),
    sa.UniqueConstraint('contact_id', 'tag', name=op.f('uq_contact_tags_contact_id'))
    )
    with op.batch_alter_table('contact_tags', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_contact_tags_contact_id'), ['contact_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_contact_tags_tag'), ['tag'], unique=False)

    op.create_table('contract_clients',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('contract', sa.String(length=255), nullable=False),
    sa.Column('organization_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('contact_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_contract_clients_contact_id_contacts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_contract_clients_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contract_clients')),
    sa.UniqueConstraint('contract', 'organization_id', 'contact_id', name='uq_contract_clients')
    )
    with op.batch_alter_table('contract_clients', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_contract_clients_contact_id'), ['contact_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_contract_clients_contract'), ['contract'], unique=False)
        batch_op.create_index(batch_op.f('ix_contract_clients_organization_id'), ['organization_id'], unique=False)

    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('contract', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('first_response_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('first_response_warn_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('resolution_warn_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('sla_events_sent', sa.JSON(), nullable=False, server_default=sa.text("'[]'")))
        batch_op.add_column(sa.Column('sla_paused_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('sla_remaining', sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch_op.create_index(batch_op.f('ix_cases_contract'), ['contract'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cases_contract'))
        batch_op.drop_column('sla_remaining')
        batch_op.drop_column('sla_paused_at')
        batch_op.drop_column('sla_events_sent')
        batch_op.drop_column('resolution_warn_at')
        batch_op.drop_column('first_response_warn_at')
        batch_op.drop_column('resolved_at')
        batch_op.drop_column('first_response_at')
        batch_op.drop_column('contract')

    with op.batch_alter_table('contract_clients', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_contract_clients_organization_id'))
        batch_op.drop_index(batch_op.f('ix_contract_clients_contract'))
        batch_op.drop_index(batch_op.f('ix_contract_clients_contact_id'))

    op.drop_table('contract_clients')
    with op.batch_alter_table('contact_tags', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_contact_tags_tag'))
        batch_op.drop_index(batch_op.f('ix_contact_tags_contact_id'))

    op.drop_table('contact_tags')
    with op.batch_alter_table('contact_notes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_contact_notes_contact_id'))

    op.drop_table('contact_notes')
